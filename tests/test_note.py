"""C2SP signed notes and checkpoints: Go's x/mod vectors, malformed input, bounds."""

from __future__ import annotations

import base64

import pytest

from credence.errors import BadSignature, InvalidInput, MessageTooLarge
from credence.keys import SigningKey
from credence.transparency import checkpoint as cp
from credence.transparency import note

# --- vectors from golang.org/x/mod/sumdb/note/note_test.go ------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oO"
    "TGwnWLox33WWd1RvMc+QQ=\n"
)
# Produced by Go's note.Sign with PETER_SKEY over a checkpoint text (x/mod 0.7.0).
GO_CHECKPOINT = (
    "PeterNeumann\n7\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"
    "\u2014 PeterNeumann x08go60crm8xxUOTw6QlX1ocdimmh73RApnBmbrpUhg9trlssCDa04oftozQ7Ku7/"
    "Mr5qnOIEohWC8K3UFxhW/evWgc=\n"
).encode()


def _peter() -> SigningKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == note.ED25519_TYPE
    return SigningKey.from_seed(raw[1:])


def _public(vkey: str) -> bytes:
    return base64.b64decode(vkey.split("+", 2)[2])[1:]


def test_key_id_and_vkey_match_go() -> None:
    key = _peter()
    assert note.key_id("PeterNeumann", note.ED25519_TYPE, key.public.raw()).hex() == "c74f20a3"
    assert note.vkey("PeterNeumann", note.ED25519_TYPE, key.public.raw()) == PETER_VKEY
    enoch = _public(ENOCH_VKEY)
    assert note.vkey("EnochRoot", note.ED25519_TYPE, enoch) == ENOCH_VKEY


def test_cosignature_key_id_uses_type_4() -> None:
    key = _peter().public.raw()
    id4 = note.key_id("PeterNeumann", note.COSIGNATURE_TYPE, key)
    assert id4 != note.key_id("PeterNeumann", note.ED25519_TYPE, key)
    assert note.vkey("PeterNeumann", note.COSIGNATURE_TYPE, key).split("+")[1] == id4.hex()


def test_sign_note_matches_go_byte_for_byte() -> None:
    assert note.sign_note(TEXT, "PeterNeumann", _peter()) == (TEXT + "\n" + PETER_SIG).encode()


def test_open_note_with_two_signatures_verifies_the_named_key() -> None:
    data = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    opened = note.open_note(data, "EnochRoot", _public(ENOCH_VKEY))
    assert opened.text == TEXT
    assert [s.name for s in opened.signatures] == ["PeterNeumann", "EnochRoot"]
    assert opened.signatures[1].key_id.hex() == "af0cfe78"
    assert note.format_note(opened) == data


def test_open_note_refuses_missing_wrong_and_renamed_signatures() -> None:
    peter = _public(PETER_VKEY)
    only_enoch = (TEXT + "\n" + ENOCH_SIG).encode()
    with pytest.raises(BadSignature, match="no signature by 'PeterNeumann'"):
        note.open_note(only_enoch, "PeterNeumann", peter)
    tampered = (TEXT.replace("cryptography", "blockchains") + "\n" + PETER_SIG).encode()
    with pytest.raises(BadSignature, match="does not verify"):
        note.open_note(tampered, "PeterNeumann", peter)
    renamed = (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego")).encode()
    with pytest.raises(BadSignature):
        note.open_note(renamed, "CarmenSandiego", peter)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        TEXT.encode(),  # no blank line, no signature
        (TEXT + "\n").encode(),  # blank line, no signature
        (TEXT + "\n" + PETER_SIG[:-1]).encode(),  # last line without newline
        (TEXT + "\n" + PETER_SIG.replace("\u2014", "-")).encode(),  # not an em dash
        (TEXT + "\n" + PETER_SIG.replace("=\n", "\n")).encode(),  # unpadded base64
        (TEXT + "\n\u2014 PeterNeumann\n").encode(),  # no signature at all
        (TEXT + "\n\u2014 PeterNeumann AAAA\n").encode(),  # shorter than 5 bytes
        (TEXT + "\n\u2014 Peter+Neumann " + PETER_SIG.split(" ")[2]).encode(),  # '+' in name
        (TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG).encode(),  # control character
        b"\xff\xfe" + (TEXT + "\n" + PETER_SIG).encode(),  # not UTF-8
    ],
)
def test_parse_note_refuses_malformed(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        note.parse_note(data)


def test_parse_note_bounds() -> None:
    line = PETER_SIG
    with pytest.raises(MessageTooLarge, match="at most 100 signatures"):
        note.parse_note((TEXT + "\n" + ENOCH_SIG + line * 100).encode())
    big = ("x" * (note.MAX_NOTE_BYTES) + "\n\n" + PETER_SIG).encode()
    with pytest.raises(MessageTooLarge, match="bytes"):
        note.parse_note(big)


def test_parse_note_keeps_a_repeated_line_once() -> None:
    parsed = note.parse_note((TEXT + "\n" + PETER_SIG + PETER_SIG).encode())
    assert len(parsed.signatures) == 1


def test_add_signatures_appends_once_per_key() -> None:
    signed = note.sign_note(TEXT, "PeterNeumann", _peter())
    enoch = note.parse_note((TEXT + "\n" + ENOCH_SIG).encode()).signatures[0]
    peter_again = note.NoteSignature("PeterNeumann", bytes.fromhex("c74f20a3"), b"\x00" * 64)
    merged = note.add_signatures(signed, [enoch, peter_again, enoch])
    assert merged == (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    note.open_note(merged, "PeterNeumann", _public(PETER_VKEY))


def test_sign_note_refuses_bad_text_and_names() -> None:
    with pytest.raises(InvalidInput, match="newline"):
        note.sign_note("no newline", "PeterNeumann", _peter())
    with pytest.raises(InvalidInput, match="without spaces"):
        note.sign_note(TEXT, "Peter Neumann", _peter())
    with pytest.raises(InvalidInput, match="control"):
        note.sign_note("a\tb\n", "PeterNeumann", _peter())


# --- checkpoints ------------------------------------------------------------


def test_checkpoint_signature_matches_go() -> None:
    checkpoint = cp.Checkpoint(origin="PeterNeumann", size=7, root_hash=bytes(32))
    assert cp.sign_checkpoint(checkpoint, _peter()) == GO_CHECKPOINT
    opened, signed = cp.open_checkpoint(GO_CHECKPOINT, "PeterNeumann", _public(PETER_VKEY))
    assert opened == checkpoint
    assert signed.signatures[0].key_id.hex() == "c74f20a3"


def test_spec_example_checkpoint_parses_and_round_trips() -> None:
    # c2sp.org/tlog-checkpoint's example body, with an extension line.
    text = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        "extension line\n"
    )
    parsed = cp.parse_checkpoint(text)
    assert parsed.origin == "example.com/behind-the-sofa"
    assert parsed.size == 20852163
    assert parsed.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert parsed.extensions == ("extension line",)
    assert cp.format_checkpoint(parsed) == text


def test_log_origin_is_fixed_per_federation() -> None:
    assert cp.log_origin("fed-ke-01") == "credence/fed-ke-01/log"
    for bad in ["", "a b", "a+b", "a/b", "a\nb"]:
        with pytest.raises(InvalidInput):
            cp.log_origin(bad)


ROOT = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"o\n5\n{ROOT}",  # no final newline
        "o\n5\n",  # no root line
        f"o\n05\n{ROOT}\n",  # leading zero
        f"o\n-5\n{ROOT}\n",
        f"o\n+5\n{ROOT}\n",
        f"o\n\u0665\n{ROOT}\n",  # a non-ASCII digit
        f"o\n{'9' * 20}\n{ROOT}\n",  # beyond int64
        "o\n5\nAAAA\n",  # root not 32 bytes
        f"o\n5\n{ROOT[:-1]}\n",  # unpadded
        f"\n5\n{ROOT}\n",  # empty origin
        f"o o\n5\n{ROOT}\n",  # space in origin
        f"o\n5\n{ROOT}\n\n",  # empty extension line
    ],
)
def test_parse_checkpoint_refuses_malformed(text: str) -> None:
    with pytest.raises(InvalidInput):
        cp.parse_checkpoint(text)


def test_open_checkpoint_refuses_another_logs_checkpoint_and_key() -> None:
    key = SigningKey.from_seed(bytes(32))
    ours = cp.Checkpoint(origin=cp.log_origin("a"), size=3, root_hash=bytes(32))
    data = cp.sign_checkpoint(ours, key)
    with pytest.raises(BadSignature):
        cp.open_checkpoint(data, cp.log_origin("b"), key.public.raw())
    with pytest.raises(BadSignature):
        cp.open_checkpoint(data, ours.origin, SigningKey.from_seed(b"\x01" * 32).public.raw())
    # Signed under the right name, but the body names another log.
    other = cp.format_checkpoint(cp.Checkpoint("credence/b/log", 3, bytes(32)))
    forged = note.sign_note(other, ours.origin, key)
    with pytest.raises(InvalidInput, match="expected 'credence/a/log'"):
        cp.open_checkpoint(forged, ours.origin, key.public.raw())
    assert cp.open_checkpoint(data, ours.origin, key.public.raw())[0] == ours
