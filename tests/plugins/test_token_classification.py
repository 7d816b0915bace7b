"""Entity chunking and metrics of `token_classification`, checked against seqeval's own results.

The reference values below were computed by seqeval 1.2.2 (`precision_score`, `recall_score`, `f1_score`)
on random IOB2/IOBES sentences; kit reproduces them without depending on seqeval.
"""

from __future__ import annotations

import pytest
from kit_plugins.token_classification import entities, entity_metrics, spans

# (true tags, predicted tags, seqeval precision, recall, f1)
SEQEVAL_CASES = [
    (
        [
            ["O", "I-ORG", "B-LOC", "S-MISC", "E-LOC", "I-ORG", "S-MISC"],
            ["B-ORG", "B-LOC", "I-PER", "I-ORG", "I-PER", "B-PER"],
            ["B-LOC", "I-PER", "I-ORG", "B-PER", "B-PER"],
            ["S-MISC", "B-LOC", "B-PER", "I-LOC", "E-LOC", "I-LOC"],
        ],
        [
            ["B-ORG", "B-LOC", "S-MISC", "S-MISC", "B-LOC", "I-ORG", "O"],
            ["B-LOC", "O", "B-PER", "E-LOC", "O", "S-MISC"],
            ["I-LOC", "B-ORG", "I-LOC", "B-PER", "B-ORG"],
            ["B-ORG", "B-ORG", "I-PER", "B-LOC", "S-MISC", "B-PER"],
        ],
        0.3333333333333333,
        0.3181818181818182,
        0.3255813953488372,
    ),
    (
        [["B-LOC", "S-MISC", "B-PER", "I-ORG", "B-LOC", "I-ORG"]],
        [["B-PER", "B-LOC", "I-LOC", "B-LOC", "B-ORG", "B-LOC"]],
        0.0,
        0.0,
        0.0,
    ),
    (
        [
            ["B-PER", "E-LOC", "I-LOC", "B-ORG", "I-ORG", "I-PER", "B-ORG", "I-PER"],
            ["I-ORG"],
            ["B-PER", "B-PER", "I-PER", "I-PER", "O", "B-PER", "B-LOC", "E-LOC"],
        ],
        [
            ["B-LOC", "I-ORG", "B-LOC", "B-ORG", "B-ORG", "E-LOC", "I-ORG", "S-MISC"],
            ["S-MISC"],
            ["I-LOC", "B-PER", "I-LOC", "B-PER", "S-MISC", "I-LOC", "B-ORG", "B-ORG"],
        ],
        0.11764705882352941,
        0.16666666666666666,
        0.13793103448275862,
    ),
    ([["B-PER", "B-ORG", "I-LOC", "I-PER", "I-LOC"]], [["E-LOC", "O", "B-PER", "I-PER", "B-ORG"]], 0.0, 0.0, 0.0),
    (
        [["B-PER", "O", "B-PER", "B-ORG", "B-PER", "E-LOC", "B-PER", "I-LOC", "B-PER"]],
        [["O", "O", "B-ORG", "I-PER", "B-PER", "S-MISC", "B-ORG", "O", "O"]],
        0.2,
        0.125,
        0.15384615384615385,
    ),
    (
        [["I-ORG", "B-PER"], ["B-PER", "I-ORG", "I-LOC", "E-LOC"], ["O", "B-LOC", "S-MISC"], ["B-PER"]],
        [["E-LOC", "B-ORG"], ["I-ORG", "I-LOC", "S-MISC", "I-PER"], ["B-ORG", "O", "I-PER"], ["I-PER"]],
        0.1111111111111111,
        0.125,
        0.11764705882352941,
    ),
    (
        [
            ["I-ORG", "B-PER", "S-MISC", "I-PER", "O", "S-MISC", "E-LOC", "B-LOC", "I-ORG"],
            ["E-LOC", "I-ORG", "I-PER", "B-LOC", "O", "S-MISC"],
            ["I-LOC", "O"],
        ],
        [
            ["B-LOC", "I-ORG", "I-PER", "B-ORG", "S-MISC", "I-LOC", "I-ORG", "I-LOC", "I-PER"],
            ["I-ORG", "E-LOC", "E-LOC", "B-PER", "O", "B-ORG"],
            ["I-LOC", "I-PER"],
        ],
        0.125,
        0.14285714285714285,
        0.13333333333333333,
    ),
    (
        [["S-MISC", "E-LOC", "E-LOC", "O"], ["E-LOC", "O", "I-PER", "S-MISC", "B-PER", "I-ORG", "I-PER"]],
        [["S-MISC", "B-LOC", "S-MISC", "B-LOC"], ["O", "O", "S-MISC", "I-LOC", "I-ORG", "S-MISC", "O"]],
        0.25,
        0.2222222222222222,
        0.23529411764705882,
    ),
    (
        [
            ["B-LOC", "B-PER", "I-PER", "O"],
            ["E-LOC", "I-LOC", "O", "B-ORG", "O", "O", "B-LOC"],
            ["B-ORG", "B-PER"],
            ["I-ORG", "I-ORG", "I-PER", "B-PER"],
        ],
        [
            ["S-MISC", "E-LOC", "B-PER", "O"],
            ["I-ORG", "S-MISC", "B-PER", "I-ORG", "I-PER", "B-LOC", "I-LOC"],
            ["B-PER", "I-PER"],
            ["I-ORG", "O", "O", "O"],
        ],
        0.09090909090909091,
        0.09090909090909091,
        0.09090909090909091,
    ),
    (
        [
            ["B-LOC", "I-LOC", "I-LOC", "O", "S-MISC"],
            ["E-LOC", "I-LOC", "B-LOC", "I-PER", "B-ORG", "E-LOC", "I-ORG", "O"],
        ],
        [
            ["I-PER", "I-PER", "I-ORG", "I-LOC", "I-LOC"],
            ["I-LOC", "B-PER", "I-LOC", "O", "O", "I-ORG", "I-PER", "I-PER"],
        ],
        0.25,
        0.2222222222222222,
        0.23529411764705882,
    ),
    (
        [["E-LOC", "B-LOC", "I-PER", "I-ORG", "B-PER", "S-MISC"], ["O", "I-ORG", "I-PER", "B-LOC"], ["I-ORG", "E-LOC"]],
        [
            ["I-LOC", "I-ORG", "E-LOC", "B-PER", "B-PER", "B-LOC"],
            ["S-MISC", "S-MISC", "I-LOC", "I-LOC"],
            ["B-PER", "S-MISC"],
        ],
        0.18181818181818182,
        0.18181818181818182,
        0.18181818181818182,
    ),
    (
        [["E-LOC", "O", "I-ORG", "I-LOC", "I-PER", "I-PER", "E-LOC", "B-PER"]],
        [["B-PER", "B-PER", "B-ORG", "B-ORG", "O", "E-LOC", "O", "B-PER"]],
        0.3333333333333333,
        0.3333333333333333,
        0.3333333333333333,
    ),
]


@pytest.mark.parametrize("true, predicted, precision, recall, f1", SEQEVAL_CASES)
def test_entity_metrics_match_seqeval(true, predicted, precision, recall, f1):
    metrics = entity_metrics(true, predicted)
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(f1)


def test_chunking_follows_conll_rules():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entities(["I-ORG", "I-ORG"]) == [("ORG", 0, 1)]  # I- after O starts an entity (IOB1 style)
    assert entities(["B-PER", "I-ORG"]) == [("PER", 0, 0), ("ORG", 1, 1)]  # a type change ends one
    assert entities(["S-MISC", "B-LOC", "E-LOC"]) == [("MISC", 0, 0), ("LOC", 1, 2)]


def test_spans_give_character_offsets_into_the_joined_words():
    words = ["EU", "rejects", "German", "call"]
    found = spans(words, ["B-ORG", "O", "B-MISC", "O"])
    assert found == [
        {"type": "ORG", "text": "EU", "start": 0, "end": 2, "words": [0, 1]},
        {"type": "MISC", "text": "German", "start": 11, "end": 17, "words": [2, 3]},
    ]
    assert " ".join(words)[11:17] == "German"
