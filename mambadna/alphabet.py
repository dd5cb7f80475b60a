"""The DNA alphabet: token ids, byte -> token encoding, decoding, reverse complement.

Encoding goes through a 256-entry lookup table applied with numpy (no per-base Python loop).
Torch-free on purpose: readers, validation and tokenization run without it.

Token ids (docs/architecture.md): PAD=0, BOS=1 (also CLS), EOS=2, MASK=3, UNK=4, A=5, C=6, G=7,
T=8, N=9; the vocabulary is padded to 16 so embedding tables stay aligned.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mambadna.errors import AlphabetError

PAD, BOS, EOS, MASK, UNK = 0, 1, 2, 3, 4
CLS = BOS
A, C, G, T, N = 5, 6, 7, 8, 9
VOCAB_SIZE = 16
BASE_TOKENS = (A, C, G, T)
SPECIAL_TOKENS = (PAD, BOS, EOS, MASK, UNK)
TOKEN_NAMES = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>", MASK: "<mask>", UNK: "<unk>",
               A: "A", C: "C", G: "G", T: "T", N: "N"}

IUPAC_AMBIGUITY = b"RYSWKMBDHV"
IUPAC_COMPLEMENT = {"R": "Y", "Y": "R", "S": "S", "W": "W", "K": "M", "M": "K",
                    "B": "V", "V": "B", "D": "H", "H": "D", "N": "N",
                    "A": "T", "T": "A", "C": "G", "G": "C"}

OnInvalid = Literal["N", "error"]
OnUnknown = Literal["error", "N"]

# Marks a byte that is not allowed under the chosen policy; never a real token id.
_REJECT = 255


def _build_table(iupac_to_n: bool, unknown_to_n: bool) -> np.ndarray:
    table = np.full(256, N if unknown_to_n else _REJECT, dtype=np.uint8)
    for letter, token in zip(b"ACGTN", (A, C, G, T, N)):
        table[letter] = token
        table[letter + 32] = token  # soft-masked lowercase: same token
    for letter in IUPAC_AMBIGUITY:
        value = N if iupac_to_n else _REJECT
        table[letter] = value
        table[letter + 32] = value
    return table


_TABLES = {
    (iupac, unknown): _build_table(iupac, unknown)
    for iupac in (True, False)
    for unknown in (True, False)
}
# The same tables as bytes: bytes.translate maps ~2x faster than np.take for byte inputs.
_BYTE_TABLES = {key: table.tobytes() for key, table in _TABLES.items()}
_REJECT_BYTE = bytes([_REJECT])

_DECODE = np.frombuffer(b"??????" * 3, dtype=np.uint8)[:VOCAB_SIZE].copy()
_DECODE[[A, C, G, T, N]] = np.frombuffer(b"ACGTN", dtype=np.uint8)

_RC_TOKENS = np.arange(VOCAB_SIZE, dtype=np.uint8)
_RC_TOKENS[[A, C, G, T]] = [T, G, C, A]

_RC_STRING = str.maketrans(
    "".join(IUPAC_COMPLEMENT) + "".join(IUPAC_COMPLEMENT).lower(),
    "".join(IUPAC_COMPLEMENT.values()) + "".join(IUPAC_COMPLEMENT.values()).lower(),
)


def _as_bytes_view(seq: str | bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(seq, np.ndarray):
        if seq.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array of ASCII bytes, got dtype {seq.dtype}")
        return seq
    if isinstance(seq, str):
        try:
            seq = seq.encode("ascii")
        except UnicodeEncodeError as err:
            raise AlphabetError(
                f"non-ASCII character {seq[err.start]!r} in sequence",
                position=err.start,
                fix="sequences must be plain ASCII letters (ACGTN, IUPAC codes)",
            ) from None
    return np.frombuffer(seq, dtype=np.uint8)


def _reject(raw: np.ndarray, encoded: np.ndarray, on_invalid: str, offset: int) -> AlphabetError:
    position = int(np.flatnonzero(encoded == _REJECT)[0])
    byte = int(raw[position])
    char = chr(byte)
    if byte in IUPAC_AMBIGUITY or byte in IUPAC_AMBIGUITY.lower():
        return AlphabetError(
            f"IUPAC ambiguity code {char!r} while on_invalid={on_invalid!r}",
            position=offset + position,
            fix="use on_invalid='N' (CLI: --on-invalid N) to read ambiguity codes as N",
        )
    shown = char if 32 < byte < 127 else f"\\x{byte:02x}"
    return AlphabetError(
        f"invalid character {shown!r} (byte {byte}) in a DNA sequence",
        position=offset + position,
        fix="remove it, or pass on_unknown='N' (CLI: --on-unknown N) to read it as N",
    )


def encode(
    seq: str | bytes | bytearray | memoryview | np.ndarray,
    *,
    on_invalid: OnInvalid = "N",
    on_unknown: OnUnknown = "error",
    return_softmask: bool = False,
    offset: int = 0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Encode DNA letters to token ids.

    seq: str, bytes or a uint8 array of ASCII letters, length L.
    on_invalid: what IUPAC ambiguity codes (R Y S W K M B D H V) become: "N" or "error".
    on_unknown: what any other non-base byte becomes: "error" (default) or "N".
    return_softmask: also return a bool array (L,), True where the letter was lowercase.
    offset: added to error positions, for callers encoding a record piece by piece.
    Returns np.uint8 array (L,) [, softmask (L,) bool]. Raises AlphabetError with the 0-based
    position of the first offending byte.
    """
    if on_invalid not in ("N", "error"):
        raise ValueError(f"on_invalid must be 'N' or 'error', got {on_invalid!r}")
    if on_unknown not in ("N", "error"):
        raise ValueError(f"on_unknown must be 'N' or 'error', got {on_unknown!r}")
    key = (on_invalid == "N", on_unknown == "N")
    if isinstance(seq, (bytes, bytearray)):
        mapped = seq.translate(_BYTE_TABLES[key])
        raw = np.frombuffer(seq, dtype=np.uint8)
        # A copy, so callers get a writable array like from np.take (a memcpy, cheap).
        encoded = np.frombuffer(mapped, dtype=np.uint8).copy()
        rejected = _REJECT_BYTE in mapped
    else:
        raw = _as_bytes_view(seq)
        encoded = np.take(_TABLES[key], raw)
        rejected = bool(encoded.size) and encoded.max() == _REJECT
    if rejected:
        raise _reject(raw, encoded, on_invalid, offset)
    if return_softmask:
        return encoded, raw >= ord("a")
    return encoded


def decode(tokens: np.ndarray | list[int], *, skip_special: bool = False) -> str:
    """Token ids -> letters "ACGTN". Special tokens raise ValueError unless skip_special."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"decode expects a 1-D array of token ids, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"token ids must be in [0, {VOCAB_SIZE}), got range "
                         f"[{arr.min()}, {arr.max()}]")
    arr = arr.astype(np.uint8, copy=False)
    special = arr < A
    if special.any():
        if not skip_special:
            pos = int(np.flatnonzero(special)[0])
            raise ValueError(f"special token {TOKEN_NAMES.get(int(arr[pos]), arr[pos])} at "
                             f"position {pos}; pass skip_special=True to drop special tokens")
        arr = arr[~special]
    if arr.size and arr.max() > N:
        pos = int(np.flatnonzero(arr > N)[0])
        raise ValueError(f"unused token id {int(arr[pos])} at position {pos}")
    return np.take(_DECODE, arr).tobytes().decode("ascii")


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    """Reverse complement of token ids along the last axis (A<->T, C<->G, N and specials kept)."""
    arr = np.asarray(tokens)
    return np.take(_RC_TOKENS, arr)[..., ::-1].astype(arr.dtype, copy=False)


def reverse_complement_str(seq: str) -> str:
    """Reverse complement of a letter string, keeping case and complementing IUPAC codes."""
    return seq.translate(_RC_STRING)[::-1]


def gc_content(tokens: np.ndarray) -> float:
    """Fraction of G or C among the A/C/G/T positions (N excluded); NaN when there are none."""
    counts = np.bincount(np.asarray(tokens, dtype=np.uint8), minlength=VOCAB_SIZE)
    acgt = int(counts[A] + counts[C] + counts[G] + counts[T])
    return float(counts[C] + counts[G]) / acgt if acgt else float("nan")
