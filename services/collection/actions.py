"""Seed action lists: the class names of the benchmarks the paper started from (section 3.2).

UCF101 and HMDB51 are written out here as data (their official class index order); Kinetics-400
is read from torchvision, which ships the 400 names with its video models, so the list exists once.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Literal

__all__ = ["HMDB51", "UCF101", "SeedList", "seed_actions"]

SeedList = Literal["ucf101", "hmdb51", "k400"]

UCF101: tuple[str, ...] = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards",
    "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag",
    "BoxingSpeedBag", "BreastStroke", "BrushingTeeth", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "CuttingInKitchen", "Diving", "Drumming", "Fencing",
    "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "GolfSwing", "Haircut",
    "Hammering", "HammerThrow", "HandstandPushups", "HandstandWalking", "HeadMassage", "HighJump",
    "HorseRace", "HorseRiding", "HulaHoop", "IceDancing", "JavelinThrow", "JugglingBalls",
    "JumpingJack", "JumpRope", "Kayaking", "Knitting", "LongJump", "Lunges", "MilitaryParade",
    "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars", "PizzaTossing", "PlayingCello",
    "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar", "PlayingPiano", "PlayingSitar",
    "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse", "PullUps", "Punch", "PushUps",
    "Rafting", "RockClimbingIndoor", "RopeClimbing", "Rowing", "SalsaSpin", "ShavingBeard",
    "Shotput", "SkateBoarding", "Skiing", "Skijet", "SkyDiving", "SoccerJuggling", "SoccerPenalty",
    "StillRings", "SumoWrestling", "Surfing", "Swing", "TableTennisShot", "TaiChi", "TennisSwing",
    "ThrowDiscus", "TrampolineJumping", "Typing", "UnevenBars", "VolleyballSpiking",
    "WalkingWithDog", "WallPushups", "WritingOnBoard", "YoYo",
)  # fmt: skip

HMDB51: tuple[str, ...] = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
    "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf",
    "handstand", "hit", "hug", "jump", "kick", "kick_ball", "kiss", "laugh", "pick", "pour",
    "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run", "shake_hands",
    "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault",
    "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk", "wave",
)  # fmt: skip


@cache
def _kinetics400() -> tuple[str, ...]:
    # torchvision/models/_meta.py is plain data with no imports; loading that one file skips
    # importing torch (seconds), which `h2a hashtags plan` has no other use for.
    package = importlib.util.find_spec("torchvision")
    folders = package.submodule_search_locations if package else None
    path = Path(next(iter(folders))) / "models" / "_meta.py" if folders else None
    spec = importlib.util.spec_from_file_location("_h2a_tv_meta", path) if path else None
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("torchvision is needed for the Kinetics-400 class names")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module._KINETICS400_CATEGORIES)


def seed_actions(name: SeedList) -> tuple[str, ...]:
    """The class names of one built-in benchmark.

    Args:
        name: ``ucf101`` (101 classes), ``hmdb51`` (51) or ``k400`` (400).

    Returns:
        The names as the benchmark writes them ("PlayingPiano", "brush_hair", "playing piano").
    """
    if name == "ucf101":
        return UCF101
    if name == "hmdb51":
        return HMDB51
    if name == "k400":
        return _kinetics400()
    raise ValueError(f"seed list must be one of ucf101, hmdb51, k400; got {name!r}")
