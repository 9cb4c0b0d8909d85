"""`curate eval`: bits per byte per held-out set, QA answer loss and multiple choice, the trainer's hook."""

from __future__ import annotations

import json
import math
import re
import shutil

import pyarrow.parquet as pq
import pytest

import torch

from curate.pipeline.cli import main as cli_main  # noqa: E402
from curate.pipeline.commands.pack import pack  # noqa: E402
from curate.stages.base import LocalExecutor  # noqa: E402
from test_pack_common import make_run, write_plan  # noqa: E402
from tinylm import code_texts, topic_texts, train_sp, train_tiny  # noqa: E402
from curate.training.bpb import load_scoring_model  # noqa: E402
from curate.training.evaluate import EvalConfig, RunEval, evaluate, read_qa  # noqa: E402

HELD = 15  # the last topics never reach training


def qa_items(n: int = 8) -> list[dict]:
    """Sentences from pydoc's topics cut in half: the question is the first half, the answer the second,
    the other choices are other sentences' second halves."""
    found, seen = [], set()
    for t in topic_texts():
        for s in re.split(r"(?<=\.)\s+", " ".join(t.split())):
            w = s.split()
            tail = " ".join(w[len(w) // 2:])
            if 10 <= len(w) <= 16 and s.isascii() and s.endswith(".") and not set("*`:") & set(s) and tail not in seen:
                seen.add(tail)
                found.append((" ".join(w[:len(w) // 2]), tail))
        if len(found) >= n:
            break
    items = []
    for i, (q, a) in enumerate(found[:n]):
        others = [found[(i + k) % n][1] for k in (1, 2, 3)]
        others.insert(i % 4, a)
        items.append({"question": q, "answer": a, "choices": others})
    return items


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    texts = topic_texts()
    qa = qa_items()
    qa_path = d / "facts.jsonl"
    qa_path.write_text("".join(json.dumps(it) + "\n" for it in qa))
    sp = train_sp(texts + code_texts(40), d / "sp.model")
    # Prose to learn the domain from, and each QA pair many times over so the tiny model learns them.
    seen = [f"Question: {it['question']}\nAnswer: {it['answer']}" for it in qa] * 100
    train = [t[:2000] for t in texts[:-HELD]] + seen
    trained = train_tiny(train, sp, d / "trained", steps=150)
    random = train_tiny(train, sp, d / "random", steps=0)
    return d, sp, trained, random, qa_path


def plain_bpb(folder, docs, start="bos") -> float:
    """One unbatched forward per document over [start] + tokens: bits of all text tokens / bytes."""
    sm = load_scoring_model(folder, start=start)
    bits = n_bytes = 0.0
    with torch.no_grad():
        for text in docs:
            ids = [sm.start_id, *sm.sp.encode(text)]
            logits = sm.model(torch.tensor([ids]))[0, :-1].float()
            bits += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item() / math.log(2)
            n_bytes += len(text.encode())
    return bits / n_bytes


def held_docs():
    return [{"text": t[:1500], "domain": "prose", "source": "pydoc"} for t in topic_texts()[-HELD:]]


def test_eval_bpb_equals_a_plain_forward_and_writes_outputs(models, tmp_path):
    _, _, trained, _, _ = models
    docs = held_docs()
    cfg = EvalConfig(block=1024, stride=512, batch_tokens=4096)
    result = evaluate(trained, {"held": docs}, config=cfg, out_dir=tmp_path)
    s = result["sets"]["held"]
    assert s["docs"] == HELD and s["bytes"] == sum(len(d["text"].encode()) for d in docs)
    assert s["tokens"] + 1 <= 1024 * HELD
    # fp32 sums of a few thousand token losses, batched vs one by one: 1e-6 relative.
    assert s["bpb"] == pytest.approx(plain_bpb(trained, [d["text"] for d in docs]), rel=1e-6)
    assert s["loss"] == pytest.approx(s["bits"] * math.log(2) / s["tokens"])
    assert s["by_domain"]["prose"]["bpb"] == pytest.approx(s["bpb"])
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["sets"]["held"]["bpb"] == pytest.approx(s["bpb"])
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_trained_model_has_lower_bpb_on_its_domain_than_a_random_one(models):
    _, _, trained, random, _ = models
    sets = {"held": held_docs()}
    good = evaluate(trained, sets)["sets"]["held"]["bpb"]
    bad = evaluate(random, sets)["sets"]["held"]["bpb"]
    assert good < bad


def test_qa_prefers_the_continuation_the_model_saw(models):
    _, _, trained, random, qa_path = models
    items = read_qa(qa_path)
    good = evaluate(trained, qa={"facts": items})["qa"]["facts"]
    bad = evaluate(random, qa={"facts": items})["qa"]["facts"]
    assert good["mc_items"] == len(items) == 8
    # Each answer was seen after its question many times; the distractors were seen after other questions.
    assert good["acc"] >= 0.75 and good["acc"] > bad["acc"]
    assert good["answer_bpb"] < bad["answer_bpb"]


def test_qa_sets_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "choices": ["b", "c"]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1.*not one of the choices"):
        read_qa(bad)
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_qa(bad)


@pytest.fixture(scope="module")
def packed_run(models, tmp_path_factory):
    """A run of prose and code packed with the models' tokenizer, a slice of each group held out."""
    _, sp, _, _, _ = models
    docs = [{"text": t, "source": "pydoc"} for t in topic_texts()[-40:]] + \
        [{"text": t, "source": "python-stdlib"} for t in code_texts(40)]
    run = make_run(tmp_path_factory.mktemp("evalrun") / "run", docs, n_parts=2)
    write_plan(run, [{"name": "code", "where": "domain = 'code'"}, {"name": "prose", "where": "domain <> 'code'"}],
               seq_len=128)
    pack(run, tokenizer=str(sp), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.3, eval_max_docs=6)
    return run


def test_curate_eval_on_a_packed_run_and_the_live_model_hook_agree(models, packed_run, tmp_path):
    _, _, trained, _, qa_path = models
    run = packed_run
    out = tmp_path / "out"
    assert cli_main(["eval", str(trained), "--run", str(run), "--qa", str(qa_path), "--out", str(out),
                     "--block", "256", "--stride", "128", "--batch-tokens", "2048"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result["sets"]) == {"code", "prose"} and "acc" in result["qa"]["facts"]
    # The run was packed without BOS: documents are scored after EOS, as the trainer showed them.
    assert result["settings"]["start"] == "eos"
    for g in ("code", "prose"):
        texts = pq.read_table(run / "eval" / f"{g}.parquet").column("text").to_pylist()
        assert result["sets"][g]["docs"] == len(texts) > 0
        assert result["sets"][g]["by_source"]
        # Long documents: the 256-token sliding window is close to a full forward.
        assert result["sets"][g]["bpb"] == pytest.approx(plain_bpb(trained, texts, start="eos"), rel=0.03)
    # The trainer's hook, on the live model with the same window, gives the same figures.
    from curate.training.hf_io import load_model

    model = load_model(trained).train()
    hook = RunEval(run, EvalConfig(block=256, stride=128, batch_tokens=2048))
    metrics = hook(model)
    assert model.training
    for g in ("code", "prose"):
        assert metrics[f"eval/{g}/bpb"] == pytest.approx(result["sets"][g]["bpb"], rel=1e-6)


def test_trainer_logs_eval_bpb_per_set(models, packed_run, tmp_path):
    from curate.pipeline.commands.plan import plan
    from curate.training.config import TrainConfig
    from curate.training.hf_io import load_model
    from curate.training.loop import train
    from curate.training.metrics import read_metrics

    _, _, trained, _, _ = models
    run = shutil.copytree(packed_run, tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: t\nkind: natural\ndescription: test\n"
                      "schedule: {kind: cosine, lr_start: 1.0e-3, lr_end_ratio: 0.1, warmup_fraction: 0.1}\n"
                      "max_epochs: 4.0\ngroups:\n"
                      "  - {name: code, where: \"domain = 'code'\"}\n  - {name: prose, where: \"domain <> 'code'\"}\n")
    plan(run, str(recipe), tokens=128 * 4 * 4, seq_len=128, batch_size=4, plot=False, echo=None)
    cfg = TrainConfig(batch_tokens=128 * 4, micro_batch_rows=4, eval_every=2, checkpoint_every=0, log_every=1,
                      plots=False, holdout_rows=1)
    res = train(run, trained, config=cfg, out_dir=tmp_path / "out", quiet=True)
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "eval/code/bpb" in r]
    assert [r["step"] for r in rows] == [2, 4] and all(r["eval/prose/bpb"] > 0 for r in rows)
    # The last figures are those of the exported model, scored as `curate eval` scores it.
    final = RunEval(run)(load_model(tmp_path / "out" / "model"))
    assert res["eval/code/bpb"] == pytest.approx(final["eval/code/bpb"], rel=1e-5)


def test_lm_eval_runs_the_qa_set_as_a_local_task_offline(models, tmp_path, monkeypatch):
    import yaml

    from curate.training.lm_eval_tasks import OFFLINE, qa_task

    _, sp_model, trained, _, qa_path = models
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    from curate.training.hf_tokenizer import export_tokenizer

    folder = shutil.copytree(trained, tmp_path / "hf")
    # The tiny model was trained with BOS before each text: the export says so, and lm-eval follows it.
    export_tokenizer(sp_model, folder, add_bos=True, max_length=1024)
    task = qa_task(qa_path, tmp_path / "tasks")
    spec = yaml.safe_load(task.read_text())
    assert spec["task"] == "curate_facts" and spec["dataset_path"] == "json"
    assert spec["output_type"] == "multiple_choice" and spec["doc_to_text"] == "Question: {{question}}\nAnswer:"
    items = read_qa(qa_path)
    result = evaluate(folder, qa={"facts": items}, tasks=[str(task)], out_dir=tmp_path / "out")
    ours, theirs = result["qa"]["facts"], result["lm_eval"]["curate_facts"]
    assert 0 <= theirs["acc"] <= 1 and 0 <= theirs["acc_norm"] <= 1
    # lm-eval tokenizes with transformers' reading of the same sentencepiece model and scores after
    # BOS (the exported add_bos_token); both tokenize every prompt and choice alike here (the export
    # differs only on text that starts with whitespace), so the log-likelihoods and accuracies agree.
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folder)
    sp = load_scoring_model(folder).sp
    strings = [f"Question: {it['question']}\nAnswer:" + s for it in items for s in ["", *(" " + c for c in it["choices"])]]
    assert all(hf(s, add_special_tokens=False)["input_ids"] == sp.encode(s) for s in strings)
    assert theirs["acc"] == ours["acc"] and theirs["acc_norm"] == ours["acc_norm"]
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["lm_eval"]["curate_facts"]["acc"] == theirs["acc"]


def test_shipped_qa_sets_load():
    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.jsonl"))
    assert shipped
    for path in shipped:
        assert all(it["choices"] for it in read_qa(path))


def test_report_shows_the_eval_plot_of_the_run_model(models, packed_run, tmp_path):
    from curate.pipeline.reporting.report import write_report

    _, _, trained, _, _ = models
    run = shutil.copytree(packed_run, tmp_path / "run")
    evaluate(trained, {"held": held_docs()[:2]}, out_dir=run / "train" / "model")  # curate eval's default --out
    assert "train/model/eval.png" in write_report(run).read_text()
