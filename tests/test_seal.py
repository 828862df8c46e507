"""The master key: sealing binds a value to its place; the key file is private and created once."""

from __future__ import annotations

import base64
import threading

import pytest

from kms_service.errors import SealError
from kms_service.seal import MasterKey, key_material_aad


def test_sealed_material_opens_only_in_its_place_and_with_its_key():
    key = MasterKey.generate()
    sealed = key.seal(b"material", key_material_aad("k", 1, 1))
    assert key.unseal(sealed, key_material_aad("k", 1, 1)) == b"material"
    # Another version, key, or stored format (a flipped material_format column) does not open it.
    for wrong in (key_material_aad("k", 2, 1), key_material_aad("other", 1, 1), key_material_aad("k", 1, 0)):
        with pytest.raises(SealError):
            key.unseal(sealed, wrong)
    with pytest.raises(SealError):
        MasterKey.generate().unseal(sealed, key_material_aad("k", 1, 1))
    assert b"material" not in sealed


def test_legacy_subkeys_differ_by_purpose_and_from_the_key():
    key = MasterKey.generate()
    assert key.legacy_subkey("a") != key.legacy_subkey("b")
    assert key.legacy_subkey("a") == key.legacy_subkey("a")
    assert base64.b64encode(key.legacy_subkey("a")).decode() != key.export()


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode(), "QQ"])
def test_malformed_master_keys_are_refused(text, tmp_path):
    with pytest.raises(SealError):
        MasterKey.load(tmp_path, environ={"KMS_MASTER_KEY": text} if text else {}, create=False)


def test_master_key_file_is_private_and_created_once_under_a_race(tmp_path):
    keys: list[MasterKey] = []
    threads = [threading.Thread(target=lambda: keys.append(MasterKey.load(tmp_path, environ={}))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({k.export() for k in keys}) == 1
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temporary file left behind


def test_environment_key_wins_over_the_file(tmp_path):
    MasterKey.load(tmp_path, environ={})
    chosen = base64.b64encode(b"\x07" * 32).decode()
    assert MasterKey.load(tmp_path, environ={"KMS_MASTER_KEY": chosen}).export() == chosen
