"""Progress shows where the device is, not how far the gateway once got (issue 11 items 14, 18)."""

from __future__ import annotations

from gateway.ota import events as ev
from gateway.ota.session import OtaSession
from tests.gateway.ota.test_ota_session import ITYPE, MFR, NEW, block, make, only, query, transfer_blocks


def test_position_follows_the_device_back_after_a_resume() -> None:
    s = make(1000)
    s.start(0.0)
    rest, now = transfer_blocks(s, 1.0, start=0)
    assert s.offset == s.position == 1000
    restored = OtaSession.restore(s.snapshot(), s.image, s.config, None)
    assert restored.position == 1000  # nothing heard yet: the last known place
    only(restored.handle(block(200), now + 1), ev.SendImageBlock)
    assert restored.offset == 1000  # "sent up to" stays the high-water mark...
    assert restored.position == 200 + 63  # ...while the device is at 20 %
    # and a device that restarts its download is at the start again
    only(restored.handle(block(0, tsn=9), now + 2), ev.SendImageBlock)
    assert restored.position == 63


def test_job_rate_counts_this_runs_bytes_and_stops_with_the_transfer() -> None:
    import zigpy.types as zt

    from gateway.engine import Job, image_info
    from gateway.image import parse_image
    from radios.sim.testing import build_ota_image

    image = parse_image(build_ota_image(MFR, ITYPE, NEW, b"\x5a" * 1000))
    s = OtaSession("00:11:22:33:44:55:66:77", image_info(image), make(1).config)
    s.start(0.0)
    s.handle(query(), 0.5)
    transfer_blocks(s, 1.0, start=0)
    s = OtaSession.restore(s.snapshot(), s.image, s.config, None)
    job = Job(id="J0001", ieee=zt.EUI64.convert("00:11:22:33:44:55:66:77"), image=image, session=s)
    for action in s.handle(block(200), 10.0):
        job.track(action, 10.0)
    # 126 bytes later, one second on: the rate is this run's bytes, not 100 % at once
    for action in s.handle(block(263), 10.5):
        job.track(action, 11.0)
    assert job.to_dict()["bytes"] == 326
    rate, eta = job.rate_and_eta(11.0)
    assert rate == 126.0 and eta == (image.size - 326) / 126.0
    job.track(ev.StateChanged(ev.SessionState.TRANSFERRING, ev.SessionState.HELD, "done"), 12.0)
    assert job.rate_and_eta(500.0)[0] == 126.0 / 2.0  # frozen at the end, not falling for ever


def test_a_downgrade_is_refused_unless_the_push_allows_it() -> None:
    from tests.gateway.ota.test_ota_session import make_image

    newer = query(version=NEW + 5)
    s = make(1000)
    s.start(0.0)
    acts = s.handle(newer, 1.0)
    assert only(acts, ev.SendQueryNextImageResponse).status == ev.Status.NO_IMAGE_AVAILABLE
    assert s.state is ev.SessionState.FAILED and "--allow-downgrade" in (s.reason or "")

    s = OtaSession("00:11:22:33:44:55:66:77", make_image(1000), make(1).config, allow_downgrade=True)
    s.start(0.0)
    acts = s.handle(newer, 1.0)
    assert only(acts, ev.SendQueryNextImageResponse).status == ev.Status.SUCCESS
    assert any(isinstance(a, ev.Note) and a.warning and "downgrade" in a.message for a in acts)
    assert OtaSession.restore(s.snapshot(), s.image, s.config, None).allow_downgrade  # a restart keeps the choice
