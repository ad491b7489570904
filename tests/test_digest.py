"""The one digest convention: ``sha256:<64 lowercase hex>``, built by ``digest_text`` and read back by
``Digest.from_str``, which refuses anything else with a short, quoted message."""

from __future__ import annotations

import hashlib

import pytest

from lora_lock.errors import InputError
from lora_lock.hashing import Digest, digest_text, sha256_bytes

HEX = hashlib.sha256(b"lora").hexdigest()


def test_built_and_parsed_digests_agree() -> None:
    text = sha256_bytes(b"lora")
    assert text == digest_text(HEX) == f"sha256:{HEX}"
    digest = Digest.from_str(text)
    assert digest.hex == HEX
    assert str(digest) == text
    assert Digest.from_str(text) == digest  # a value: equal digests compare equal and hash alike
    assert len({digest, Digest(HEX)}) == 1


@pytest.mark.parametrize(
    "text",
    [
        HEX,  # no algorithm
        f"md5:{HEX}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX.upper()}",
        f"sha256: {HEX}",
        "",
        "sha256:" + "z" * 64,
    ],
)
def test_parse_refuses_other_spellings(text: str) -> None:
    with pytest.raises(InputError, match="is not a digest of the form sha256:<64 lowercase hex>"):
        Digest.from_str(text)


def test_a_crafted_value_is_quoted_briefly() -> None:
    with pytest.raises(InputError) as caught:
        Digest.from_str("sha256:" + "a" * 5000)
    assert len(caught.value.message) < 200


def test_the_constructor_validates_too() -> None:
    with pytest.raises(InputError, match="not a sha256 hex digest"):
        Digest("abc")
