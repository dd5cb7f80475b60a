"""The DNA alphabet: token ids, encode policies, decode, reverse complement (with properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambadna import alphabet as ab
from mambadna.errors import AlphabetError

DNA = st.text(alphabet="ACGTN", max_size=300)
SOFT_DNA = st.text(alphabet="ACGTNacgtn", max_size=300)
FEW = settings(max_examples=50, deadline=None)


def test_token_ids_are_the_contract():
    assert (ab.PAD, ab.BOS, ab.EOS, ab.MASK, ab.UNK) == (0, 1, 2, 3, 4)
    assert (ab.A, ab.C, ab.G, ab.T, ab.N, ab.VOCAB_SIZE) == (5, 6, 7, 8, 9, 16)


def test_encode_bases_lowercase_and_iupac():
    assert ab.encode("ACGTN").tolist() == [5, 6, 7, 8, 9]
    assert ab.encode(b"acgtn").tolist() == [5, 6, 7, 8, 9]
    assert ab.encode("RYSWKMBDHVryswkmbdhv").tolist() == [ab.N] * 20
    assert ab.encode(b"").dtype == np.uint8


@pytest.mark.parametrize("kind", [str, bytes, bytearray, lambda s: np.frombuffer(s.encode(),
                                                                                  np.uint8)])
def test_every_input_type_gives_the_same_writable_array(kind):
    seq = "ACGTNacgtnRY"
    data = seq if kind is str else kind(seq.encode()) if kind in (bytes, bytearray) else kind(seq)
    out = ab.encode(data)
    assert out.tolist() == [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 9, 9]
    assert out.dtype == np.uint8 and out.flags.writeable


@pytest.mark.parametrize("seq, position", [(b"ACGU", 3), (b"AC-GT", 2), (b"*", 0),
                                          (b"ACG\x00", 3), (b"ACG\xc3\xa9", 3)])
def test_unknown_characters_are_errors_with_position(seq, position):
    with pytest.raises(AlphabetError) as info:
        ab.encode(seq)
    assert info.value.position == position
    assert "--on-unknown N" in str(info.value)


def test_non_ascii_text_is_an_error_with_position():
    with pytest.raises(AlphabetError, match="non-ASCII") as info:
        ab.encode("ACGé")
    assert info.value.position == 3


def test_on_unknown_n_reads_other_bytes_as_n():
    assert ab.encode(b"AUX-", on_unknown="N").tolist() == [5, 9, 9, 9]


def test_on_invalid_error_rejects_iupac_and_names_the_option():
    with pytest.raises(AlphabetError, match="IUPAC ambiguity code 'r'") as info:
        ab.encode(b"ACGTr", on_invalid="error")
    assert info.value.position == 4 and "--on-invalid N" in str(info.value)


def test_offset_shifts_error_positions():
    with pytest.raises(AlphabetError) as info:
        ab.encode(b"AU", offset=1000)
    assert info.value.position == 1001


def test_bad_policy_names_are_rejected():
    with pytest.raises(ValueError):
        ab.encode("A", on_invalid="skip")
    with pytest.raises(ValueError):
        ab.encode("A", on_unknown="skip")


def test_softmask_marks_lowercase():
    tokens, soft = ab.encode("ACgtN", return_softmask=True)
    assert tokens.tolist() == [5, 6, 7, 8, 9] and soft.tolist() == [0, 0, 1, 1, 0]


def test_decode_and_special_tokens():
    assert ab.decode([5, 6, 7, 8, 9]) == "ACGTN"
    with pytest.raises(ValueError, match="special token"):
        ab.decode([ab.BOS, 5])
    assert ab.decode([ab.BOS, 5, ab.EOS, ab.PAD], skip_special=True) == "A"
    with pytest.raises(ValueError):
        ab.decode([16])


def test_reverse_complement_examples():
    assert ab.decode(ab.reverse_complement(ab.encode("AACGTN"))) == "NACGTT"
    assert ab.reverse_complement_str("AcgRN") == "NYcgT"
    batch = np.stack([ab.encode("ACGG"), ab.encode("TTTN")])
    assert [ab.decode(r) for r in ab.reverse_complement(batch)] == ["CCGT", "NAAA"]


def test_gc_content():
    assert ab.gc_content(ab.encode("GGCCAATT")) == 0.5
    assert ab.gc_content(ab.encode("GCNN")) == 1.0
    assert np.isnan(ab.gc_content(ab.encode("NNN")))


@FEW
@given(DNA)
def test_encode_decode_round_trip(seq):
    assert ab.decode(ab.encode(seq)) == seq


@FEW
@given(SOFT_DNA)
def test_lowercase_encodes_like_uppercase(seq):
    assert ab.encode(seq).tolist() == ab.encode(seq.upper()).tolist()


@FEW
@given(DNA)
def test_reverse_complement_is_an_involution(seq):
    tokens = ab.encode(seq)
    assert np.array_equal(ab.reverse_complement(ab.reverse_complement(tokens)), tokens)
    assert ab.reverse_complement_str(ab.reverse_complement_str(seq)) == seq


@FEW
@given(DNA)
def test_token_and_string_reverse_complements_agree(seq):
    assert ab.decode(ab.reverse_complement(ab.encode(seq))) == ab.reverse_complement_str(seq)


@FEW
@given(st.binary(max_size=200))
def test_bytes_and_array_paths_agree_on_any_bytes(data):
    """encode has a bytes.translate fast path and an np.take path: same result or error."""
    def run(x):
        try:
            return ab.encode(x).tolist()
        except AlphabetError as err:
            return ("error", err.position)

    assert run(data) == run(np.frombuffer(data, dtype=np.uint8))
