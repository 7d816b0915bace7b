"""keras-hub tokenizers traced without RaggedTensor's run-time checks: the same tokens, far smaller graphs."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
keras_hub = pytest.importorskip("keras_hub")

from keras_hub.src.utils import tensor_utils  # noqa: E402

from kit.compat import fix_keras_hub  # noqa: E402
from kit.tokenizer_graphs import lean_tokenizer_graphs, unchecked_ragged_tensors  # noqa: E402

ALPHABET = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĠĠ", "Ġa", "Ġb"]
SPECIAL = ["<|start|>", "<|end|>", "<|pad|>"]
TEXTS = ["a b  c", "<|start|>ab\n  b<|end|>", "", "   ", "x   ::= [a]\n      | b"]


def byte_pair_tokenizer():
    vocabulary = {token: i for i, token in enumerate(ALPHABET + SPECIAL)}
    return keras_hub.tokenizers.BytePairTokenizer(
        vocabulary=vocabulary, merges=["Ġ a", "Ġ b", "Ġ Ġ"], unsplittable_tokens=SPECIAL
    )


def word_piece_tokenizer():
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "##b", "x", "[", "]", ":", "=", "|"]
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, special_tokens_in_strings=True)


def as_lists(tokens):
    """Token ids as nested lists (keras-hub hands eager ragged results back as lists already)."""
    return tokens.to_list() if hasattr(tokens, "to_list") else [list(row) for row in tokens]


def graph_of(function, *specs):
    """(op counts over the graph and its functions, number of functions) of `function` traced for `specs`."""
    graph = tf.function(function, input_signature=list(specs), autograph=False).get_concrete_function().graph
    definition = graph.as_graph_def()
    nodes = list(definition.node) + [node for f in definition.library.function for node in f.node_def]
    ops = {}
    for node in nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
        if node.op == "Assert" and "RaggedFrom" in node.name:  # a factory's check of its row partition
            ops["partition checks"] = ops.get("partition checks", 0) + 1
    return ops, len(definition.library.function)


@pytest.mark.parametrize("make", [byte_pair_tokenizer, word_piece_tokenizer], ids=["byte-pair", "wordpiece"])
def test_tokenizers_trace_without_ragged_checks_and_give_the_same_tokens(make):
    fix_keras_hub()  # what kit calls before loading or building any keras-hub model
    tokenizer = make()
    texts = tf.constant(TEXTS)
    eager = tokenizer(texts)
    traced = tf.function(lambda x: tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])(texts)
    assert as_lists(traced) == as_lists(eager)

    ops, _ = graph_of(lambda x: tokenizer(x), tf.TensorSpec([None], tf.string))
    assert ops.get("partition checks", 0) == 0, ops


def test_byte_pair_graph_is_far_smaller_than_keras_hubs(monkeypatch):
    fix_keras_hub()
    spec = tf.TensorSpec([None], tf.string)
    lean_ops, lean_functions = graph_of(lambda x: byte_pair_tokenizer()(x), spec)
    monkeypatch.setattr(tensor_utils, "no_convert_scope", tensor_utils.no_convert_scope.keras_scope)
    checked_ops, checked_functions = graph_of(lambda x: byte_pair_tokenizer()(x), spec)
    assert checked_ops["partition checks"] >= 3 * len(SPECIAL)  # keras-hub's own graph: three per split
    assert lean_functions < checked_functions / 2
    assert sum(lean_ops.values()) < sum(checked_ops.values()) / 2


def test_checks_stay_outside_keras_hubs_preprocessing():
    fix_keras_hub()
    values, bad_splits = tf.constant([1, 2, 3]), tf.constant([0, 5], tf.int64)  # 5 rows' end past 3 values

    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.function(lambda: tf.RaggedTensor.from_row_splits(values, bad_splits))()
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        with tensor_utils.no_convert_scope():  # keras-hub's scope run eagerly keeps its checks
            tf.RaggedTensor.from_row_splits(values, bad_splits)


def test_a_caller_that_passes_validate_keeps_its_choice():
    values, bad_splits = tf.constant([1, 2, 3]), tf.constant([0, 5], tf.int64)

    def by_keyword():
        with unchecked_ragged_tensors():
            return tf.RaggedTensor.from_row_splits(values, bad_splits, validate=True)

    def by_position():
        with unchecked_ragged_tensors():
            return tf.RaggedTensor.from_row_splits(values, bad_splits, None, True)

    for build in (by_keyword, by_position):
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.function(build)()


def test_other_threads_keep_their_checks_while_one_traces_without():
    import threading

    values, bad_splits = tf.constant([1, 2, 3]), tf.constant([0, 5], tf.int64)
    inside, done = threading.Event(), threading.Event()

    def tracing_thread():
        with unchecked_ragged_tensors():
            inside.set()
            done.wait(30)

    worker = threading.Thread(target=tracing_thread)
    worker.start()
    try:
        assert inside.wait(30)
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            tf.RaggedTensor.from_row_splits(values, bad_splits)  # this thread, eagerly
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.function(lambda: tf.RaggedTensor.from_row_splits(values, bad_splits))()  # this thread's graph
    finally:
        done.set()
        worker.join()


def test_factories_are_tensorflows_own_again_after_the_block_even_after_an_error():
    import inspect

    names = [  # every factory of TensorFlow's that checks (found here, not from kit's list)
        name
        for name in vars(tf.RaggedTensor)
        if name.startswith("from_") and "validate" in inspect.signature(getattr(tf.RaggedTensor, name)).parameters
    ]
    before = {name: tf.RaggedTensor.__dict__[name] for name in names}
    assert len(before) >= 8
    with unchecked_ragged_tensors():
        assert all(tf.RaggedTensor.__dict__[name] is not before[name] for name in names)
        with unchecked_ragged_tensors():  # nested
            ragged = tf.function(lambda: tf.RaggedTensor.from_row_lengths(tf.constant([1, 2, 3]), [2, 1]))()
    assert ragged.to_list() == [[1, 2], [3]]
    assert {name: tf.RaggedTensor.__dict__[name] for name in names} == before
    with pytest.raises(RuntimeError):
        with unchecked_ragged_tensors():
            raise RuntimeError("a failed trace")
    assert {name: tf.RaggedTensor.__dict__[name] for name in names} == before


def test_installed_once_however_often_it_is_asked():
    fix_keras_hub()
    installed = tensor_utils.no_convert_scope
    lean_tokenizer_graphs()
    lean_tokenizer_graphs()
    assert tensor_utils.no_convert_scope is installed
    assert installed.keras_scope is not installed
    assert not hasattr(installed.keras_scope, "keras_scope")  # wraps keras-hub's own scope, not itself


def test_the_documented_example_runs_as_written(capsys):
    from tests.docs_examples import run_example

    run_example("## Tokenizer graphs without ragged checks")
    assert capsys.readouterr().out.strip() == "[[b'a', b'b', b'c'], [b'd']]"
