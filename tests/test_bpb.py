"""training/bpb.py: bits per byte under a causal LM, batched, with a sliding window for long texts."""

from __future__ import annotations

import math

import pytest

import torch

from tests.tinylm import code_texts, topic_texts, train_sp, train_tiny  # noqa: E402
from curate.training.bpb import load_scoring_model, windows  # noqa: E402

# fp32 on CPU. Batched rows with right padding run the same matmuls in a different shape, so sums of
# a few hundred token losses (each ~1e1 bits) agree to ~1e-4 bits; 1e-6 relative allows for that and
# is far below any off-by-one (a shifted target changes a document's bits by whole percents).
REL = 1e-6


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpb")
    texts = topic_texts()
    sp = train_sp(texts, d / "sp.model")
    return train_tiny(texts, sp, d / "model", steps=60), texts


def plain_bits(sm, text: str) -> float:
    """One unbatched forward over [BOS] + tokens, all text tokens scored."""
    ids = [sm.start_id, *sm.sp.encode(text)]
    with torch.no_grad():
        logits = sm.model(torch.tensor([ids]))[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:], dtype=torch.long), reduction="sum")
    return nll.item() / math.log(2)


def test_windows_score_each_target_once():
    seq = list(range(50))
    for first in (1, 7, 30, 49):
        for block, stride in ((8, 3), (16, 8), (64, 32), (10, 9)):
            wins = windows(0, seq, first, block, stride)
            scored = [t for w in wins for t in w.ids[len(w.ids) - w.n_scored:]]
            assert scored == seq[first:]
            for w in wins:
                assert len(w.ids) <= block
                # Every scored target sees at least block - stride tokens (or everything before it).
                ctx = len(w.ids) - w.n_scored
                assert ctx >= min(block - stride, w.ids[0] + ctx)


def test_doc_bits_equals_a_plain_forward_when_the_doc_fits(lm):
    folder, texts = lm
    sm = load_scoring_model(folder)
    docs = [t[:300] for t in texts[:12]] + ["", "x", "héllo wörld ✓"]
    got = sm.doc_bits(docs, block=512, stride=256, batch_tokens=2048)
    for doc, (bits, n_bytes, n_tok) in zip(docs, got):
        assert n_bytes == len(doc.encode("utf-8"))
        assert n_tok == len(sm.sp.encode(doc))
        assert n_tok + 1 <= 512
        assert bits == pytest.approx(plain_bits(sm, doc), rel=REL, abs=1e-6)
    # The batch size does not change a document's bits.
    again = sm.doc_bits(docs, block=512, stride=256, batch_tokens=512)
    assert [b for b, _, _ in again] == pytest.approx([b for b, _, _ in got], rel=REL, abs=1e-6)


def test_sliding_window_is_close_to_a_full_forward_on_a_long_doc(lm):
    folder, texts = lm
    sm = load_scoring_model(folder)
    doc = max(texts, key=len)[:4000]
    n = len(sm.sp.encode(doc))
    assert 4 * 128 < n < 2500
    full = plain_bits(sm, doc)
    (slid, n_bytes, n_tok), = sm.doc_bits([doc], block=128, stride=64, batch_tokens=1024)
    assert n_tok == n
    # Each token keeps at least 64 tokens of context; a tiny model trained on 64-token rows gains
    # little from more, so the totals agree to within 2% (a dropped or double-counted window of 64
    # tokens would move them by about 64 / n > 2.5%).
    assert slid == pytest.approx(full, rel=0.02)
    # A stride of 1 gives every token the full block of context: the same windows a one-token-at-a-
    # time reference computes.
    short = doc[:700]
    (s1, _, _), = sm.doc_bits([short], block=32, stride=1, batch_tokens=4096)
    ids = [sm.start_id, *sm.sp.encode(short)]
    ref = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            ctx = ids[max(0, t - 31):t]
            logp = torch.log_softmax(sm.model(torch.tensor([ctx]))[0, -1].float(), -1)
            ref -= logp[ids[t]].item() / math.log(2)
    assert s1 == pytest.approx(ref, rel=REL)


def test_trained_model_scores_its_domain_lower_than_code(lm):
    folder, texts = lm
    sm = load_scoring_model(folder)
    prose = sm.doc_bits(texts[:20])
    code = sm.doc_bits(code_texts(20))
    bpb = lambda rows: sum(b for b, _, _ in rows) / sum(n for _, n, _ in rows)  # noqa: E731
    assert bpb(prose) < bpb(code)


def test_answer_bits_match_doc_bits_difference(lm):
    folder, _ = lm
    sm = load_scoring_model(folder)
    prompts = ["The for statement is used to", "Question: what does return do?\nAnswer:"]
    answers = [" iterate over the elements of a sequence", " leaves the current function call"]
    got = sm.answer_bits(prompts, answers)
    for p, a, (bits, n_bytes, n_tok) in zip(prompts, answers, got):
        assert n_bytes == len(a.encode())
        whole, ctx = sm.sp.encode(p + a), sm.sp.encode(p)
        assert whole[:len(ctx)] == ctx and n_tok == len(whole) - len(ctx)
        # Bits of the whole minus bits of the prompt alone: the continuation's share of one forward.
        assert bits == pytest.approx(plain_bits(sm, p + a) - plain_bits(sm, p), rel=1e-5)


def test_bad_arguments_and_missing_tokenizer(lm, tmp_path):
    folder, _ = lm
    sm = load_scoring_model(folder)
    with pytest.raises(ValueError, match="stride"):
        sm.doc_bits(["a"], block=64, stride=64)
    with pytest.raises(ValueError, match="batch_tokens"):
        sm.doc_bits(["a"], block=64, stride=32, batch_tokens=16)
    import shutil

    shutil.copytree(folder, tmp_path / "m")
    (tmp_path / "m" / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_scoring_model(tmp_path / "m")
    assert load_scoring_model(tmp_path / "m", tokenizer=folder).start_id == sm.start_id


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_is_close_to_cpu_fp32(lm):
    folder, texts = lm
    docs = [t[:3000] for t in texts[:32]]
    cpu = load_scoring_model(folder).doc_bits(docs, block=256, stride=128)
    gpu = load_scoring_model(folder, device="cuda").doc_bits(docs, block=256, stride=128)
    assert [r[1:] for r in gpu] == [r[1:] for r in cpu]
    # bf16 autocast rounds activations to 8 mantissa bits; summed over a document the bits agree to 1%.
    for (g, _, _), (c, _, _) in zip(gpu, cpu):
        assert g == pytest.approx(c, rel=0.01)
