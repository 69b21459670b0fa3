"""``mixrec recommend`` ranks like the service: same user / query and options, same list (issue 10)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tools.cli import app
from mixrec.config import REPO_ROOT
from mixrec.errors import InputError
from server_harness import engine_config
from services.engine import Options, RecommenderEngine

CASES = [  # the ranking options the service takes: mix, diversity, type and tag filters, exclusions
    {"k": 6, "mix": {"product": 3, "video": 2, "audio": 1}},
    {"k": 5, "mix": "interleave", "diversity": 0.4},
    {"k": 4, "types": ["product", "audio"], "mix": {"product": 0.5, "audio": 0.5}, "diversity": 1.0},
    {"k": 3, "tags": "TAG"},
]


def _cli_args(opts: dict) -> list[str]:
    args = ["-k", str(opts["k"])]
    if "mix" in opts:
        args += ["--mix", opts["mix"] if isinstance(opts["mix"], str) else json.dumps(opts["mix"])]
    if "diversity" in opts:
        args += ["--diversity", str(opts["diversity"])]
    for name in ("types", "tags", "exclude_item_ids"):
        if name in opts:
            args += ["--exclude" if name == "exclude_item_ids" else f"--{name}", ",".join(opts[name])]
    return args


@pytest.fixture
def served(tiny_demo, tmp_path):
    # ANN from the first item on, so both sides take the candidate-index path (the tiny catalog keeps
    # each type's search exact inside the index, so the comparison is deterministic).
    eng = RecommenderEngine.open(engine_config(tiny_demo.artifacts_dir, tmp_path, ann_threshold=1),
                                 start_background=False)
    eng.ann.refresh(eng.model.snapshot, wait=True)
    assert eng.ann.view(eng.model.snapshot) is not None
    yield eng
    eng.close()


def _cli(artifacts, args: list[str]) -> dict:
    res = CliRunner().invoke(app, ["recommend", "--artifacts", str(artifacts), "--json",
                                   "--config", str(REPO_ROOT / "configs" / "offline.yaml"), *args],
                             env={"MIXREC__SERVING__ANN_THRESHOLD": "1"})
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_cli_and_service_give_the_same_ranking(served, tiny_demo):
    snap = served.model.snapshot
    user = max(snap.user_ids, key=lambda u: len(snap.seen_rows(snap.user_index[u])))
    tag = next(t for it in served.model.items for t in it.tags)
    first = served.recommend(user, Options(k=1, explain=False))["items"][0]["item_id"]
    for case in CASES + [{"k": 5, "exclude_item_ids": [first]}]:
        case = {**case, "tags": [tag]} if case.get("tags") == "TAG" else case
        service = served.recommend(user, Options(**case))["items"]
        cli = _cli(tiny_demo.artifacts_dir, ["--user", user, *_cli_args(case)])["items"]
        assert service, case
        assert [r["item_id"] for r in cli] == [r["item_id"] for r in service], case
        assert cli == json.loads(json.dumps(service)), case  # scores and explanations too


def test_cli_and_service_rank_a_query_alike(served, tiny_demo):
    liked = [served.model.items[0].item_id, served.model.items[5].item_id]
    case = {"k": 5, "mix": "interleave", "diversity": 0.3}
    service = served.recommend_by_query({}, liked, Options(**case))
    cli = _cli(tiny_demo.artifacts_dir, ["--liked", ",".join(liked), *_cli_args(case)])
    assert [r["item_id"] for r in cli["items"]] == [r["item_id"] for r in service["items"]]
    assert cli["items"] == json.loads(json.dumps(service["items"]))
    assert cli["query"]["interests"] == service["query"]["interests"]


def test_cli_refuses_a_bad_mix_like_the_service(served, tiny_demo):
    user = served.model.snapshot.user_ids[0]
    with pytest.raises(InputError, match="add up to"):
        served.recommend(user, Options(k=3, mix={"product": 2}))
    res = CliRunner().invoke(app, ["recommend", "--artifacts", str(tiny_demo.artifacts_dir), "--user", user,
                                   "-k", "3", "--mix", '{"product": 2}'])
    assert res.exit_code == 2 and "add up to" in res.output
