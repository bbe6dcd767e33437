"""Hashtag planning: benchmark action names -> platform hashtags, by the paper's six rules.

Seed paper section 3.2: start from the UCF101 / HMDB51 / Kinetics class names, turn each into the
hashtag people actually use, and keep only tags with at least 5 million views. Every rule below
is a small table of data plus a few lines that apply it, and every hashtag records which rules
produced it, so a person reviewing the YAML plan sees why a tag is there (or why it was dropped).

Rules, in the order they apply to one seed action:

1. noun substitution  a light verb is dropped: "PlayingPiano" -> #piano (44.4B vs 29.4M views);
2. noun-verb order     the object goes first: "repairing shoes" -> #shoerepair;
3. generalisation      an umbrella tag replaces its members: "BasketballDunk" -> #basketball;
4. specification       an umbrella also brings its sub-styles: #ballroomdance -> #tango, #waltz;
5. consolidation       tags for the same action merge, the most viewed is kept;
6. social/cultural     trends and challenges from a user list (#flowerchallenge).
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import ConfigError
from services.common.records import utc_now

__all__ = [
    "CATEGORIES",
    "CONSOLIDATION",
    "DEFAULT_TARGET_VIDEOS",
    "DEFAULT_VIEW_FLOOR",
    "HashtagPlan",
    "PlannedTag",
    "build_plan",
    "load_plan",
    "normalise_tag",
    "parse_views",
    "read_views_csv",
    "save_plan",
    "seed_tags",
]

_logger = logging.getLogger(__name__)

DEFAULT_VIEW_FLOOR = 5_000_000
DEFAULT_TARGET_VIDEOS = 900

# Rule 1. Verbs that add nothing a viewer searches for: the noun alone finds far more videos.
LIGHT_VERBS = frozenset(
    {"playing", "play", "doing", "practicing", "performing", "apply", "applying"}
)

# Rule 2. Gerund -> the form it takes after its object in the noun phrase people write.
VERB_NOUNS: dict[str, str] = {
    "repairing": "repair",
    "cutting": "cutting",
    "riding": "riding",
    "walking": "walking",
    "mopping": "mopping",
    "shaving": "shaving",
    "brushing": "brushing",
    "blowing": "blowing",
    "washing": "washing",
    "cleaning": "cleaning",
    "juggling": "juggling",
    "tossing": "tossing",
    "peeling": "peeling",
    "carving": "carving",
    "folding": "folding",
    "ironing": "ironing",
    "decorating": "decorating",
    "braiding": "braiding",
    "painting": "painting",
}
# Words dropped when a verb phrase becomes a noun phrase ("walking with dog" -> #dogwalking).
_FILLER = frozenset({"a", "an", "the", "with", "in", "on", "at", "of", "to", "and"})

# Rule 3. Umbrella tag -> the tags (normalised) it covers.
UMBRELLAS: dict[str, tuple[str, ...]] = {
    "basketball": ("basketballdunk", "playingbasketball", "dribble", "dunking", "shootball"),
    "gymnastics": (
        "balancebeam", "floorgymnastics", "parallelbars", "pommelhorse", "stillrings",
        "unevenbars", "flicflac", "somersault", "cartwheel", "cartwheeling",
    ),
    "ballroomdance": (
        "salsaspin", "salsadancing", "tangodancing", "swingdancing", "dancingcharleston",
    ),
    "boxing": ("boxingpunchingbag", "boxingspeedbag", "punchingbag", "punch", "punchingperson"),
    "swimming": (
        "breaststroke", "frontcrawl", "swimmingbreaststroke", "swimmingbackstroke",
        "swimmingbutterflystroke",
    ),
    "soccer": ("soccerjuggling", "soccerpenalty", "soccerballjuggling", "kickingsoccerball"),
    "tennis": ("tennisswing",),
}  # fmt: skip
_UMBRELLA_OF = {member: umbrella for umbrella, members in UMBRELLAS.items() for member in members}

# Rule 4. Umbrella tag -> sub-styles that matter on their own.
SPECIFICATION: dict[str, tuple[str, ...]] = {
    "ballroomdance": ("chacha", "salsa", "tango", "waltz", "quickstep"),
    "swimming": ("butterflystroke", "backstroke"),
}

# Rule 5. Tags that denote the same action; only the most viewed one of a group is kept.
CONSOLIDATION: tuple[tuple[str, ...], ...] = (
    ("cuttingcakes", "cutfruit", "applecutting", "breadcutting", "watermeloncutting",
     "pineapplecutting", "kitchencutting"),
    ("pushups", "pushup", "wallpushups"),
    ("pullups", "pullup"),
    ("situp", "situps"),
    ("squat", "squats", "bodyweightsquats"),
    ("biking", "bikeriding", "ridebike", "cycling"),
    ("horseriding", "ridehorse", "horseback"),
    ("jumprope", "skippingrope", "ropeskipping"),
)  # fmt: skip

# Category groups of section 3.2; the first group with a matching fragment wins.
SOCIAL = "social/cultural"
CATEGORIES: dict[str, tuple[str, ...]] = {
    "dance": (
        "danc", "ballet", "salsa", "tango", "waltz", "chacha", "quickstep", "zumba", "krump",
        "macarena", "charleston", "twerk",
    ),
    "fitness": (
        "pushup", "pullup", "situp", "squat", "lunge", "benchpress", "deadlift", "cleanandjerk",
        "jumpingjack", "jumprope", "skipping", "yoga", "aerobic", "plank", "stretch", "workout",
        "exercis", "weightlift", "hulahoop", "taichi",
    ),
    "sports": (
        "ball", "golf", "tennis", "boxing", "punch", "swim", "stroke", "diving", "dive", "ski",
        "surf", "skate", "archery", "bowling", "fencing", "gymnast", "beam", "bars", "horse",
        "rings", "vault", "jump", "throw", "shotput", "cricket", "hockey", "rowing", "kayak",
        "rafting", "climb", "wrestl", "biking", "bike", "kick", "frisbee", "billiard",
        "badminton", "squash", "soccer", "javelin", "discus", "tabletennis",
    ),
}  # fmt: skip
EVERYDAY = "everyday"

_VIEW_UNITS = {"": 1, "k": 10**3, "thousand": 10**3, "m": 10**6, "million": 10**6,
               "b": 10**9, "billion": 10**9}  # fmt: skip


def normalise_tag(text: str) -> str:
    """The canonical form of a hashtag: ASCII lower case letters and digits only.

    Unicode is decomposed (NFKD) and combining accents dropped, so "#Café Dançe!" -> "cafedance";
    spaces, punctuation and the leading '#' disappear.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return re.sub(r"[^a-z0-9]", "", bare.lower())


def _words(action: str) -> list[str]:
    """Lower-case words of a class name in any benchmark's spelling.

    "PlayingPiano", "brush_hair", "punching person (boxing)", "riding or walking with horse":
    the parenthetical is dropped and "or X" keeps the first alternative.
    """
    text = re.sub(r"\([^)]*\)", " ", action).replace("_", " ").replace("-", " ")
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", text)]
    while "or" in words[:-1]:
        at = words.index("or")
        del words[at : at + 2]
    return words


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def category_of(tag: str) -> str:
    for category, fragments in CATEGORIES.items():
        if any(fragment in tag for fragment in fragments):
            return category
    return EVERYDAY


@dataclass(frozen=True, slots=True)
class PlannedTag:
    """One hashtag of the plan with the provenance a reviewer needs.

    ``rules`` names the rules that produced it (``seed`` when the class name was used as is);
    ``seeds`` the class names it came from as ``list:name``; ``keep`` false with a ``reason``
    when consolidation or the view floor dropped it.
    """

    tag: str
    category: str
    rules: tuple[str, ...]
    seeds: tuple[str, ...]
    views: int | None = None
    target_videos: int = DEFAULT_TARGET_VIDEOS
    keep: bool = True
    reason: str = ""

    @property
    def rule(self) -> str:
        """The rules as one provenance string ("noun_substitution+consolidation")."""
        return "+".join(self.rules)


@dataclass(frozen=True, slots=True)
class HashtagPlan:
    """A reviewable collection plan: what to query and how many videos to aim for."""

    tags: tuple[PlannedTag, ...]
    view_floor: int = DEFAULT_VIEW_FLOOR
    target_videos: int = DEFAULT_TARGET_VIDEOS
    created_at: str = field(default_factory=utc_now)

    def kept(self) -> tuple[PlannedTag, ...]:
        return tuple(tag for tag in self.tags if tag.keep)


def seed_tags(action: str, origin: str) -> list[PlannedTag]:
    """Rules 1-4 applied to one class name.

    Args:
        action: a class name as its benchmark writes it ("PlayingPiano", "repairing shoes").
        origin: where the name came from ("ucf101", "k400", "user"), kept as provenance.

    Returns:
        The hashtags it yields: the base tag (or its umbrella) and, for an umbrella with
        sub-styles, one tag per sub-style.
    """
    words = _words(action)
    if not words:
        return []
    seed = f"{origin}:{action}"
    direct = normalise_tag("".join(words))
    if words[0] in LIGHT_VERBS and len(words) > 1:
        base, rules = normalise_tag("".join(words[1:])), ("noun_substitution",)
    elif words[0] in VERB_NOUNS and len(words) > 1:
        objects = [_singular(w) for w in words[1:] if w not in _FILLER]
        base, rules = normalise_tag("".join([*objects, VERB_NOUNS[words[0]]])), ("noun_verb_order",)
    else:
        base, rules = direct, ("seed",)
    umbrella = _UMBRELLA_OF.get(base) or _UMBRELLA_OF.get(direct)
    if umbrella:
        base, rules = umbrella, (*(r for r in rules if r != "seed"), "generalisation")
    found = [PlannedTag(base, category_of(base), rules, (seed,))]
    for style in SPECIFICATION.get(base, ()):
        found.append(PlannedTag(style, category_of(style), (*rules, "specification"), (seed,)))
    return found


def _merge(tags: Iterable[PlannedTag]) -> list[PlannedTag]:
    """Tags that normalise alike are one tag: seeds and rules are united, order kept."""
    merged: dict[str, PlannedTag] = {}
    for tag in tags:
        known = merged.get(tag.tag)
        if known is None:
            merged[tag.tag] = tag
            continue
        rules = tuple(dict.fromkeys((*known.rules, *tag.rules)))
        seeds = tuple(dict.fromkeys((*known.seeds, *tag.seeds)))
        category = SOCIAL if SOCIAL in (known.category, tag.category) else known.category
        merged[tag.tag] = replace(known, rules=rules, seeds=seeds, category=category)
    return list(merged.values())


def _consolidate(tags: list[PlannedTag]) -> list[PlannedTag]:
    by_tag = {tag.tag: tag for tag in tags}
    for group in CONSOLIDATION:
        present = [by_tag[name] for name in group if name in by_tag]
        if len(present) < 2:
            continue
        # Unknown views rank last; among equals the group's first spelling wins.
        winner = max(present, key=lambda t: -1 if t.views is None else t.views)
        for tag in present:
            if tag is winner:
                by_tag[tag.tag] = replace(
                    tag,
                    rules=(*tag.rules, "consolidation"),
                    seeds=tuple(dict.fromkeys(s for t in present for s in t.seeds)),
                )
            else:
                reason = f"consolidated into #{winner.tag}"
                by_tag[tag.tag] = replace(tag, keep=False, reason=reason)
    return [by_tag[tag.tag] for tag in tags]


def build_plan(
    seeds: Iterable[tuple[str, str]],
    social: Iterable[str] = (),
    views: Mapping[str, int] | None = None,
    view_floor: int = DEFAULT_VIEW_FLOOR,
    target_videos: int = DEFAULT_TARGET_VIDEOS,
) -> HashtagPlan:
    """All six rules, the view floor and the per-tag target, from seed actions to a plan.

    Args:
        seeds: ``(origin, class name)`` pairs, e.g. ``("ucf101", "PlayingPiano")``.
        social: social/cultural hashtags to add (rule 6), in any spelling ("#FlowerChallenge").
        views: known view counts by hashtag (any spelling); tags without a count are kept and
            left for the reviewer, since the floor cannot be judged.
        view_floor: minimum views a tag needs (the paper: 5 million).
        target_videos: videos to collect per kept tag (the paper: about 900).

    Returns:
        The plan, tags in first-seen order, dropped tags included with their reason.
    """
    if view_floor < 0 or target_videos < 1:
        raise ConfigError("view_floor must be >= 0 and target_videos >= 1")
    known_views = {normalise_tag(tag): int(count) for tag, count in (views or {}).items()}
    candidates: list[PlannedTag] = []
    for origin, action in seeds:
        candidates.extend(seed_tags(action, origin))
    for trend in social:
        tag = normalise_tag(trend)
        if tag:
            candidates.append(PlannedTag(tag, SOCIAL, ("social_cultural",), (f"social:{trend}",)))
    tags = [
        replace(tag, views=known_views.get(tag.tag), target_videos=target_videos)
        for tag in _merge(candidates)
    ]
    tags = _consolidate(tags)
    tags = [
        replace(tag, keep=False, reason=f"{tag.views:,} views below the {view_floor:,} floor")
        if tag.keep and tag.views is not None and tag.views < view_floor
        else tag
        for tag in tags
    ]
    plan = HashtagPlan(tuple(tags), view_floor=view_floor, target_videos=target_videos)
    _logger.info("planned %d hashtags, %d kept", len(plan.tags), len(plan.kept()))
    return plan


def parse_views(text: str) -> int:
    """A view count as people write it: "44.4 Billion", "29.4M", "5,000,000"."""
    match = re.fullmatch(r"\s*([\d.,]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _VIEW_UNITS:
        raise ConfigError(f"not a view count: {text!r}")
    return round(float(match.group(1).replace(",", "")) * _VIEW_UNITS[unit])


def read_views_csv(path: Path) -> dict[str, int]:
    """``hashtag,views`` rows (a header row is optional) -> views by normalised tag."""
    views: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or not row[0].strip() or row[0].strip().lower() == "hashtag":
                continue
            views[normalise_tag(row[0])] = parse_views(row[1])
    return views


def save_plan(plan: HashtagPlan, path: Path) -> None:
    """Write the plan as YAML a person can review and edit (flip ``keep``, change targets)."""
    document = {
        "view_floor": plan.view_floor,
        "target_videos": plan.target_videos,
        "created_at": plan.created_at,
        "hashtags": [
            {**asdict(tag), "rules": list(tag.rules), "seeds": list(tag.seeds)} for tag in plan.tags
        ],
    }
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def load_plan(path: Path) -> HashtagPlan:
    """Read a (possibly hand-edited) plan; tags are re-normalised, bad entries name themselves."""
    document: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
    tags = []
    for index, entry in enumerate(document.get("hashtags") or []):
        try:
            tag = normalise_tag(str(entry["tag"]))
            views = entry.get("views")
            tags.append(
                PlannedTag(
                    tag=tag,
                    category=str(entry.get("category") or category_of(tag)),
                    rules=tuple(entry.get("rules") or ("manual",)),
                    seeds=tuple(entry.get("seeds") or ()),
                    views=None if views is None else int(views),
                    target_videos=int(entry.get("target_videos") or document["target_videos"]),
                    keep=bool(entry.get("keep", True)),
                    reason=str(entry.get("reason") or ""),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}: hashtags[{index}] is not a valid entry: {error}") from error
    return HashtagPlan(
        tuple(tags),
        view_floor=int(document.get("view_floor", DEFAULT_VIEW_FLOOR)),
        target_videos=int(document.get("target_videos", DEFAULT_TARGET_VIDEOS)),
        created_at=str(document.get("created_at") or utc_now()),
    )
