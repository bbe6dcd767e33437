"""The six hashtag rules on real benchmark class names, the view floor, the plan file and CLI."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from services.cli import main
from services.collection.actions import HMDB51, UCF101, seed_actions
from services.collection.planning import (
    build_plan,
    load_plan,
    normalise_tag,
    parse_views,
    save_plan,
    seed_tags,
)


def _by_tag(plan):
    return {tag.tag: tag for tag in plan.tags}


def test_builtin_seed_lists_are_complete():
    assert len(UCF101) == len(set(UCF101)) == 101
    assert len(HMDB51) == len(set(HMDB51)) == 51
    k400 = seed_actions("k400")
    assert len(k400) == 400 and "playing piano" in k400


def test_normalisation_of_case_spaces_punctuation_and_accents():
    assert normalise_tag("#Café Dançe!") == "cafedance"
    assert normalise_tag("  Flower-Challenge ") == "flowerchallenge"
    assert normalise_tag("ＢａｌｌＥＴ") == "ballet"  # full-width letters (NFKD)


def test_noun_substitution_on_class_names():
    [piano] = seed_tags("PlayingPiano", "ucf101")
    assert (piano.tag, piano.rules) == ("piano", ("noun_substitution",))
    [squash] = seed_tags("playing squash or racquetball", "k400")
    assert squash.tag == "squash"
    # UCF101's and Kinetics' spellings of the same action become one tag with both seeds.
    plan = build_plan([("ucf101", "PlayingPiano"), ("k400", "playing piano")])
    assert _by_tag(plan)["piano"].seeds == ("ucf101:PlayingPiano", "k400:playing piano")


def test_noun_verb_order():
    [shoes] = seed_tags("repairing shoes", "user")
    assert (shoes.tag, shoes.rules) == ("shoerepair", ("noun_verb_order",))
    assert seed_tags("WalkingWithDog", "ucf101")[0].tag == "dogwalking"
    assert seed_tags("MoppingFloor", "ucf101")[0].tag == "floormopping"
    assert seed_tags("riding or walking with horse", "k400")[0].tag == "horseriding"


def test_generalisation_and_specification():
    [dunk] = seed_tags("BasketballDunk", "ucf101")
    assert (dunk.tag, dunk.rules) == ("basketball", ("generalisation",))
    assert seed_tags("dribble", "hmdb51")[0].tag == "basketball"
    salsa = {tag.tag: tag for tag in seed_tags("SalsaSpin", "ucf101")}
    assert salsa["ballroomdance"].rules == ("generalisation",)
    assert {"chacha", "salsa", "tango", "waltz"} <= set(salsa)
    assert salsa["tango"].rules == ("generalisation", "specification")
    assert salsa["tango"].category == "dance"


def test_consolidation_keeps_the_most_viewed_tag():
    seeds = [("ucf101", "PushUps"), ("hmdb51", "pushup"), ("k400", "push up")]
    plan = build_plan(seeds, views={"#pushup": 9_000_000_000, "pushups": 3_000_000_000})
    tags = _by_tag(plan)
    assert tags["pushup"].keep and "consolidation" in tags["pushup"].rules
    assert set(tags["pushup"].seeds) == {"ucf101:PushUps", "hmdb51:pushup", "k400:push up"}
    assert not tags["pushups"].keep and tags["pushups"].reason == "consolidated into #pushup"
    # The paper's example: one cutting tag survives, the most viewed one.
    cutting = [("k400", "cutting watermelon"), ("k400", "cutting pineapple"), ("user", "cutfruit")]
    views = {"watermeloncutting": 80_000_000, "pineapplecutting": 20_000_000, "cutfruit": 9e6}
    kept = [tag.tag for tag in build_plan(cutting, views=views).kept()]
    assert kept == ["watermeloncutting"]


def test_social_additions_and_view_floor():
    plan = build_plan(
        [("ucf101", "PlayingPiano"), ("ucf101", "Archery"), ("ucf101", "Knitting")],
        social=["#FlowerChallenge"],
        views={"piano": parse_views("44.4 Billion"), "archery": parse_views("1.2M")},
    )
    tags = _by_tag(plan)
    assert tags["piano"].keep and tags["piano"].views == 44_400_000_000
    assert not tags["archery"].keep and "below the 5,000,000 floor" in tags["archery"].reason
    assert tags["knitting"].keep and tags["knitting"].views is None  # unknown: left to review
    flower = tags["flowerchallenge"]
    assert flower.category == "social/cultural" and flower.rules == ("social_cultural",)
    assert all(tag.target_videos == 900 for tag in plan.tags)


def test_full_builtin_plan_covers_every_category():
    seeds = [
        (name, action) for name in ("ucf101", "hmdb51", "k400") for action in seed_actions(name)
    ]
    plan = build_plan(seeds, social=["flowerchallenge"])
    categories = {tag.category for tag in plan.tags}
    assert categories == {"dance", "sports", "fitness", "everyday", "social/cultural"}
    assert len({tag.tag for tag in plan.tags}) == len(plan.tags)
    assert all(tag.tag == normalise_tag(tag.tag) and tag.rules for tag in plan.tags)


def test_plan_file_round_trip_and_hand_edit(tmp_path):
    plan = build_plan([("ucf101", "PlayingPiano"), ("ucf101", "Archery")], views={"piano": 5e9})
    path = tmp_path / "plan.yaml"
    save_plan(plan, path)
    assert load_plan(path) == plan
    document = yaml.safe_load(path.read_text())
    document["hashtags"][0]["keep"] = False  # a reviewer drops #piano
    document["hashtags"][1]["target_videos"] = 50
    path.write_text(yaml.safe_dump(document))
    edited = load_plan(path)
    assert [(tag.tag, tag.target_videos) for tag in edited.kept()] == [("archery", 50)]


def test_plan_command_writes_yaml_and_prints_table(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    (tmp_path / "actions.txt").write_text("# my actions\nrepairing shoes\n")
    (tmp_path / "social.txt").write_text("#FlowerChallenge\n")
    (tmp_path / "views.csv").write_text("hashtag,views\n#piano,44.4 Billion\narchery,1000\n")
    out = tmp_path / "plan.yaml"
    args = ["hashtags", "plan", "--seeds", "ucf101", "--actions", str(tmp_path / "actions.txt")]
    args += ["--social", str(tmp_path / "social.txt"), "--views", str(tmp_path / "views.csv")]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "#piano" in result.output and "noun_substitution" in result.output
    assert "#shoerepair" in result.output and "#flowerchallenge" in result.output
    tags = _by_tag(load_plan(out))
    assert tags["shoerepair"].seeds == ("user:repairing shoes",)
    assert not tags["archery"].keep
    assert len([t for t in tags.values() if "ucf101:" in ",".join(t.seeds)]) > 80
