"""The PV Access mirror (:mod:`trainstamp._pva`): its pure value builders, and a mirror of
a real caproto PVGroup read and written by p4p's client over loopback."""

import asyncio

import numpy as np
import pytest
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty
from hypothesis import given
from hypothesis import strategies as st
from p4p.client.thread import Context, RemoteError
from p4p.nt import NTNDArray

from trainstamp._ca_env import pva_client_env, pva_server_env
from trainstamp._pva import (
    PVAMirror,
    alarm_of,
    from_pva,
    ntndarray_value,
    pva_code,
    stamp_of,
    to_pva,
    train_id_codes,
    unique_id,
)


@pytest.mark.parametrize(("dtype", "length", "text", "code"), [
    (ChannelType.DOUBLE, 1, False, "d"),
    (ChannelType.LONG, 1, False, "i"),
    (ChannelType.STRING, 1, False, "s"),
    (ChannelType.ENUM, 1, False, "s"),
    (ChannelType.CHAR, 255, True, "s"),
    (ChannelType.CHAR, 255, False, "aB"),
    (ChannelType.DOUBLE, 4096, False, "ad"),
    (ChannelType.LONG, 65536, False, "ai"),
])
def test_pva_code_follows_the_ca_type(dtype, length, text, code):
    assert pva_code(dtype, length, text) == code
    assert pva_code(ChannelType.ENUM, 1, False, boolean=True) == "?"


def test_values_to_and_from_pva():
    assert to_pva("?", 1) is True and from_pva("?", True) == 1
    assert to_pva("as", "OK") == ["OK"] and from_pva("as", ["OK"]) == "OK"
    assert to_pva("s", b"caf\xc3\xa9") == "café"
    assert to_pva("L", 2**64 - 1) == 2**64 - 1
    assert to_pva("ad", [1.0, 2.0]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="one string"):
        from_pva("as", ["a", "b"])


def test_train_id_pvs_are_ulong():
    names = ["T:LAST:TRAIN_ID", "T:CAPTURE:TRAIN_IDS", "T:CAPTURE:BAD_TRAIN_IDS",
             "T:CAPTURE:START_TRAIN", "T:FEED_TRAIN_ID", "T:FRAME_COUNT"]
    assert train_id_codes(names) == {"T:LAST:TRAIN_ID": "L", "T:CAPTURE:TRAIN_IDS": "aL",
                                     "T:CAPTURE:START_TRAIN": "L", "T:FEED_TRAIN_ID": "L"}
    assert to_pva("aL", [1.0, 2.0**53]).tolist() == [1, 2**53]


def test_ca_stamps_and_alarms_as_pva_has_them():
    assert stamp_of(0, 5) == (631_152_000, 5)  # the EPICS epoch is 1990-01-01 UTC
    assert stamp_of(1_000_000_000, 999_999_999) == (1_631_152_000, 999_999_999)
    assert alarm_of(0, 0) == (0, "")
    assert alarm_of(3, 17) == (3, "UDF")
    assert alarm_of(3, 9) == (3, "COMM")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_unique_id_is_the_frame_number_in_an_int32(n):
    u = unique_id(n)
    assert 0 <= u < 2**31 and (u == n if n < 2**31 else u == n % 2**31)


def test_ntndarray_value_carries_the_frame_and_its_header():
    frame = (np.arange(1024 * 1024, dtype=np.uint32) % 65521).astype(np.uint16).reshape(1024, 1024)
    frame[3, 7] = 65535
    train = 2**64 - 2  # exact as a uint64, not as a double
    v = ntndarray_value(frame, 123_456, train, 1_700_000_000_123_456_789)
    assert v.getID() == "epics:nt/NTNDArray:1.0"
    assert v["uniqueId"] == 123_456
    assert [d["size"] for d in v["dimension"]] == [1024, 1024]  # fastest axis first
    assert v["timeStamp.secondsPastEpoch"] == 1_700_000_000
    assert v["timeStamp.nanoseconds"] == v["dataTimeStamp.nanoseconds"] == 123_456_789
    img = NTNDArray.unwrap(v)
    assert img.dtype == np.uint16 and img.shape == (1024, 1024)
    np.testing.assert_array_equal(img, frame)
    assert img.attrib["TrainID"] == train
    assert img.attrib["FrameNumber"] == 123_456
    assert img.attrib["Timestamp"] == 1_700_000_000_123_456_789
    assert img.attrib["ColorMode"] == 0
    assert v["uncompressedSize"] == 2 * 1024 * 1024


class Small(PVGroup):
    """A few PVs of the kinds the IOCs have."""

    status = pvproperty(name="STATUS", value="STARTING", dtype=ChannelType.STRING, read_only=True)
    acquiring = pvproperty(name="ACQUIRING", value=0, read_only=True)
    rate = pvproperty(name="RATE", value=1.5)
    train_id = pvproperty(name="ID", value=0.0, read_only=True)
    ids = pvproperty(name="IDS", value=[0.0], max_length=16, read_only=True)
    connected = pvproperty(name="CONNECTED", value=False, read_only=True)

    @rate.putter
    async def rate(self, instance, value):
        if value < 0:
            raise ValueError(f"rate {value} is negative")
        return value


def test_a_mirror_follows_caproto_writes_and_forwards_pva_puts():
    async def main():
        group = Small(prefix="MIR:")
        mirror = PVAMirror(group.pvdb, codes={"MIR:STATUS": "as", "MIR:ACQUIRING": "?",
                                              "MIR:ID": "L"},
                           conf=pva_server_env("127.0.0.1", 0, 0))
        await mirror.start()
        try:
            udp = int(mirror.server.conf()["EPICS_PVAS_BROADCAST_PORT"])
            loop = asyncio.get_running_loop()

            def client(fn):
                def run():
                    with Context("pva", conf=pva_client_env("127.0.0.1", udp), useenv=False) as ctx, \
                         Context("pva", conf=pva_client_env("127.0.0.1", udp), useenv=False,
                                 nt=False) as raw:
                        return fn(ctx, raw)
                return loop.run_in_executor(None, run)

            def first(ctx, raw):
                got = raw.get(["MIR:STATUS", "MIR:ACQUIRING", "MIR:RATE", "MIR:ID", "MIR:IDS",
                               "MIR:CONNECTED"])
                return [v.type()["value"] for v in got], ctx.get("MIR:STATUS")

            codes, status = await client(first)
            assert codes == ["as", "?", "d", "L", "ad", "?"] and list(status) == ["STARTING"]

            await group.status.write("OK")
            await group.acquiring.write(1)
            await group.train_id.write(float(2**53), timestamp=(1_000_000_000, 123),
                                       severity=2, status=3)
            await group.ids.write([1.0, 2.0, 3.0])
            got = await client(lambda ctx, raw: ctx.get(["MIR:STATUS", "MIR:ACQUIRING",
                                                         "MIR:ID", "MIR:IDS"]))
            assert list(got[0]) == ["OK"] and bool(got[1]) is True
            assert got[2] == 2**53 and list(got[3]) == [1.0, 2.0, 3.0]
            assert got[2].raw_stamp == (1_631_152_000, 123)  # the CA timestamp, to the ns
            assert got[2].severity == 2 and got[2].raw["alarm.message"] == "HIHI"

            def puts(ctx, raw):
                ctx.put("MIR:RATE", 4.0)
                with pytest.raises(RemoteError, match="rate -1.0 is negative"):
                    ctx.put("MIR:RATE", -1.0)
                with pytest.raises(RemoteError):
                    ctx.put("MIR:STATUS", ["NO"])  # read-only
                return ctx.get("MIR:RATE")

            assert await client(puts) == 4.0
            assert group.rate.value == 4.0 and group.status.value == "OK"
        finally:
            mirror.stop()

    asyncio.run(main())
