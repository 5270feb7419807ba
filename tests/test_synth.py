"""The generator draws traffic in time-ordered chunks so any size fits in bounded memory."""
from __future__ import annotations

import numpy as np

from cdrtrace import synth


def test_chunks_are_time_ordered_and_hold_every_planted_call():
    chunks, truth = synth.generate_chunks(20_000, 2_000, seed=3, days=2, campaigns=12,
                                          chunk_calls=1_500)
    parts = list(chunks)
    assert len(parts) > 8
    starts = [(int(p["start"].min()), int(p["start"].max())) for p in parts]
    assert all(a[1] < b[0] for a, b in zip(starts, starts[1:], strict=False))   # slices in order
    for p in parts:
        assert (np.diff(p["end"]) >= 0).all()                 # each chunk as a switch writes it
    seq = np.concatenate([p["seq"] for p in parts])
    assert (seq == np.arange(len(seq))).all() and truth["calls"] == len(seq) == 20_000
    calls = {(int(line), int(caller), int(start)) for p in parts
             for line, caller, start in zip(p["line"], p["caller"], p["start"], strict=True)}
    planted = [(int(c["victim"][2:]), int(c["origin"][2:]), call["start_s"])
               for c in truth["campaigns"] for call in c["calls"]]
    assert len(planted) >= 12 and all(p in calls for p in planted)


def test_chunked_and_whole_generation_draw_the_same_traffic():
    whole, _ = synth.generate(6_000, 500, seed=4)
    chunks, _ = synth.generate_chunks(6_000, 500, seed=4)
    (only,) = list(chunks)                                    # small: one chunk
    for name in ("line", "caller", "start", "disposition", "presentation"):
        assert sorted(whole[name].tolist()) == sorted(only[name].tolist())
