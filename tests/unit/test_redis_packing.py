"""core/engine/redis/connection.py packs exactly the bytes redis-py's own asyncio packer does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from herald.core.engine.redis.connection import HiredisPackingConnection

_ARG = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
_NAME = st.sampled_from(["SET", "EVALSHA", "XADD", "SCRIPT LOAD", b"XREADGROUP", b"CLIENT SETNAME"])


def _joined(chunks: list[bytes]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


@given(_NAME, st.lists(_ARG, max_size=12))
def test_one_command_packs_like_redis_py(name: str | bytes, args: list[object]) -> None:
    ours, theirs = HiredisPackingConnection(), Connection()
    assert _joined(ours.pack_command(name, *args)) == _joined(theirs.pack_command(name, *args))


@given(st.lists(st.tuples(_NAME, st.lists(_ARG, max_size=6)), min_size=1, max_size=8))
def test_a_pipeline_packs_like_redis_py(commands: list[tuple[str | bytes, list[object]]]) -> None:
    cmds = [(name, *args) for name, args in commands]
    assert _joined(HiredisPackingConnection().pack_commands(cmds)) == _joined(Connection().pack_commands(cmds))


def test_memoryview_arguments_are_packed() -> None:
    packed = _joined(HiredisPackingConnection().pack_command("XADD", "k", "*", "b", memoryview(b"xyz")))
    assert packed.endswith(b"$3\r\nxyz\r\n")


@pytest.mark.parametrize("bad", [None, object(), [1, 2]])
def test_unpackable_arguments_raise_data_error(bad: object) -> None:
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", bad)
