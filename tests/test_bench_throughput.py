"""bench/throughput.py's helpers: texts cycle when a run asks for more than the data holds (the GPU
rows need tens of thousands of short prompts, ToxicChat has 2,801)."""

import doctest

from bench import throughput


def test_doctests_pass():
    assert doctest.testmod(throughput).failed == 0


def test_repeated_texts_keep_their_order_and_count():
    assert throughput._repeat_to(["x", "y", "z"], 7) == ["x", "y", "z", "x", "y", "z", "x"]


def test_unseen_texts_are_none_the_judge_trained_on(shared_data):
    """--unseen: only prompts of the shipped judge's validation and test rows, a proper part of ToxicChat's file."""
    from monitor.judge.dataset import read_records
    from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
    from monitor.judge.training import TrainConfig

    config = TrainConfig.of_artifact(HeadsJudge.load(DEFAULT_ARTIFACT).manifest)
    trained = {r.prompt for r in read_records(shared_data / "toxicchat-train.jsonl") if config.split(r) == "train"}
    every, unseen = throughput.load_texts(3000, 10, 0), throughput.load_texts(3000, 10, 0, unseen=True)
    assert trained & set(every["short"]) and not trained & set(unseen["short"] + unseen["long"])
    assert len(unseen["short"]) == 3000 and len(set(unseen["short"])) < len(set(every["short"]))
