from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.link.netem import (
    FourStateLoss,
    GilbertElliott,
    Netem,
    NetemSpec,
)

MS = 1_000_000
PACKET = bytes(range(200))


def send(netem: Netem, count: int, packet: bytes = PACKET, now_ns: int = 0) -> list[
    list[tuple[int, bytes]]
]:
    return [netem.enqueue(packet, now_ns) for _ in range(count)]


# Parsing


@pytest.mark.parametrize(
    ("token", "ns"),
    [
        ("2s", 2_000_000_000), ("2sec", 2_000_000_000), ("2secs", 2_000_000_000),
        ("20ms", 20 * MS), ("20msec", 20 * MS), ("20msecs", 20 * MS), ("1.5ms", 1_500_000),
        ("7us", 7_000), ("7usec", 7_000), ("7usecs", 7_000),
        ("9ns", 9), ("9nsec", 9), ("9nsecs", 9),
        ("250", 250_000),  # a bare number is microseconds, as in tc
        ("20MS", 20 * MS),
    ],
)
def test_time_units(token: str, ns: int) -> None:
    assert NetemSpec.parse(f"delay {token}").delay_ns == ns


@pytest.mark.parametrize(
    ("token", "bps"),
    [
        ("1200", 1200), ("1200bit", 1200),
        ("10kbit", 10_000), ("10mbit", 10_000_000), ("2gbit", 2 * 10**9), ("1tbit", 10**12),
        ("1kibit", 1024), ("1mibit", 2**20), ("1gibit", 2**30), ("1tibit", 2**40),
        ("100bps", 800), ("1kbps", 8_000), ("1mbps", 8 * 10**6), ("1gbps", 8 * 10**9),
        ("1tbps", 8 * 10**12), ("1KiBps", 8 * 1024),
        ("1.5Mbit", 1_500_000),
    ],
)
def test_rate_units(token: str, bps: int) -> None:
    assert NetemSpec.parse(f"rate {token}").rate_bps == bps


def test_every_keyword() -> None:
    spec = NetemSpec.parse(
        "limit 50 delay 20ms 5ms 25% distribution normal loss 1% 10% "
        "duplicate 0.5% 5% reorder 25% 50% gap 5 corrupt 0.1 2% rate 10mbit 20 48 5"
    )
    assert spec == NetemSpec(
        limit=50,
        delay_ns=20 * MS, jitter_ns=5 * MS, delay_correlation=0.25, distribution="normal",
        loss=0.01, loss_correlation=0.10,
        duplicate=0.005, duplicate_correlation=0.05,
        reorder=0.25, reorder_correlation=0.5, gap=5,
        corrupt=0.001, corrupt_correlation=0.02,
        rate_bps=10_000_000, packet_overhead=20, cell_size=48, cell_overhead=5,
    )


def test_aliases_and_loss_forms() -> None:
    assert NetemSpec.parse("latency 10ms") == NetemSpec.parse("delay 10ms")
    assert NetemSpec.parse("loss random 3% 4%") == NetemSpec.parse("loss 3% 4%")
    assert NetemSpec.parse("drop 3%") == NetemSpec.parse("loss 3%")
    assert NetemSpec.parse("rate 1mbit -14").packet_overhead == -14


def test_loss_models_and_their_defaults() -> None:
    # tc-netem(8): gemodel defaults r = 1 - p, 1-h = 100%, 1-k = 0%
    assert NetemSpec.parse("loss gemodel 20%").loss_model == GilbertElliott(0.2, 0.8, 1.0, 0.0)
    assert NetemSpec.parse("loss gemodel 1% 10% 70% 0.1%").loss_model == GilbertElliott(
        0.01, 0.1, 0.7, 0.001
    )
    # loss state defaults p31 = 1 - p13, p32 = 0, p23 = 100%, p14 = 0
    assert NetemSpec.parse("loss state 10%").loss_model == FourStateLoss(0.1, 0.9, 0.0, 1.0, 0.0)
    assert NetemSpec.parse("loss state 1% 2% 3% 4% 5%").loss_model == FourStateLoss(
        0.01, 0.02, 0.03, 0.04, 0.05
    )


def test_empty_spec_is_no_impairment() -> None:
    assert NetemSpec.parse("") == NetemSpec() == NetemSpec.parse("limit 1000")


def test_gap_defaults_to_one_with_reorder() -> None:
    assert NetemSpec.parse("delay 10ms reorder 25%").gap == 1
    assert NetemSpec.parse("delay 10ms reorder 25% gap 5").gap == 5


ROUND_TRIPS = [
    "",
    "delay 20ms 5ms loss 1% duplicate 0.5% reorder 25% corrupt 0.1% rate 10mbit limit 1000",
    "delay 1s 1ns 0.001% distribution paretonormal",
    "delay 0ms 0ms 30%",
    "delay 1500us reorder 100% 3% gap 7",
    "loss gemodel 1% 10% 70% 0.1%",
    "loss state 1% 2% 3% 4% 5%",
    "loss 0% 25%",
    "rate 12345bit 0 48",
    "rate 1gibit -14 48 -2",
    "limit 0",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_str_round_trips(text: str) -> None:
    spec = NetemSpec.parse(text)
    assert NetemSpec.parse(str(spec)) == spec


def test_str_reads_like_tc() -> None:
    spec = NetemSpec.parse("rate 10mbit loss 1% delay 20ms 5ms")
    assert str(spec) == "limit 1000 delay 20ms 5ms loss 1% rate 10mbit"


probability = st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1))


@st.composite
def specs(draw: st.DrawFn) -> NetemSpec:
    delay_ns = draw(st.integers(0, 10**12))
    jitter_ns = draw(st.integers(0, 10**12))
    distributions = ["uniform"] + (["normal", "pareto"] if delay_ns and jitter_ns else [])
    reorder = draw(probability) if delay_ns else 0.0
    loss_model = draw(
        st.one_of(
            st.none(),
            st.builds(GilbertElliott, probability, probability, probability, probability),
            st.builds(
                FourStateLoss, probability, probability, probability, probability, probability
            ),
        )
    )
    return NetemSpec(
        delay_ns=delay_ns,
        jitter_ns=jitter_ns,
        delay_correlation=draw(probability),
        distribution=draw(st.sampled_from(distributions)),
        loss=0.0 if loss_model else draw(probability),
        loss_correlation=0.0 if loss_model else draw(probability),
        loss_model=loss_model,
        duplicate=draw(probability),
        duplicate_correlation=draw(probability),
        reorder=reorder,
        reorder_correlation=draw(probability),
        gap=draw(st.integers(0, 100)) if reorder else 0,
        corrupt=draw(probability),
        corrupt_correlation=draw(probability),
        rate_bps=draw(st.integers(0, 10**13)),
        packet_overhead=draw(st.integers(-100, 100)),
        cell_size=draw(st.integers(0, 100)),
        cell_overhead=draw(st.integers(-10, 10)),
        limit=draw(st.integers(0, 10**6)),
    )


@given(specs())
def test_any_spec_round_trips(spec: NetemSpec) -> None:
    assert NetemSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("dely 10ms", "dely"),
        ("delay 10qs", "10qs"),
        ("delay -5ms", "-5ms"),
        ("delay 10ms 5qs", "5qs"),
        ("loss 150%", "150%"),
        ("loss 1x", "1x"),
        ("loss foo", "foo"),
        ("loss gemodel 1% 2z", "2z"),
        ("duplicate lots", "lots"),
        ("rate 10%", "10%"),
        ("rate 10mbitt", "10mbitt"),
        ("limit many", "many"),
        ("limit 1.5", "1.5"),
        ("delay 1ms 1ms distribution gaussian", "gaussian"),
        ("delay", "delay"),
        ("rate", "rate"),
        ("ecn", "ecn"),
    ],
)
def test_errors_name_the_token(text: str, token: str) -> None:
    with pytest.raises(ValueError) as error:
        NetemSpec.parse(text)
    assert f'"{token}"' in str(error.value)


def test_tc_consistency_errors() -> None:
    with pytest.raises(ValueError, match="reordering not possible without specifying some delay"):
        NetemSpec.parse("reorder 25%")
    with pytest.raises(ValueError, match="gap specified without reorder"):
        NetemSpec.parse("delay 10ms gap 5")
    with pytest.raises(ValueError, match="needs a delay and a jitter"):
        NetemSpec.parse("delay 10ms distribution normal")
    with pytest.raises(ValueError, match="given twice"):
        NetemSpec.parse("loss 1% loss gemodel 2%")
    with pytest.raises(ValueError, match="loss"):
        NetemSpec.from_kwargs(loss=1.5)


WORDS = [
    "delay", "latency", "loss", "drop", "random", "gemodel", "state", "duplicate", "reorder",
    "gap", "corrupt", "rate", "limit", "distribution", "normal", "pareto", "ecn",
    "10ms", "5", "-3", "1%", "150%", "0.5", ".5", "1e3", "10mbit", "kbit", "%", "", "x",
]


@given(st.one_of(st.text(), st.lists(st.sampled_from(WORDS)).map(" ".join)))
def test_parse_raises_only_value_error(text: str) -> None:
    try:
        spec = NetemSpec.parse(text)
    except ValueError:
        return
    assert NetemSpec.parse(str(spec)) == spec


def test_from_kwargs_equals_parse() -> None:
    assert NetemSpec.from_kwargs(
        delay=0.02, jitter=0.005, loss=0.01, duplicate=0.005, reorder=0.25, corrupt=0.001,
        rate=10_000_000, limit=500, gap=3, distribution="pareto",
    ) == NetemSpec.parse(
        "delay 20ms 5ms distribution pareto loss 1% duplicate 0.5% reorder 25% gap 3 "
        "corrupt 0.1% rate 10mbit limit 500"
    )
    assert NetemSpec.from_kwargs(loss=0.07) == NetemSpec.parse("loss 7")
    assert NetemSpec.from_kwargs(delay=0.01, reorder=0.5).gap == 1


# The model


def test_no_impairment_sends_at_once() -> None:
    netem = Netem(NetemSpec())
    assert netem.enqueue(PACKET, 123) == [(123, PACKET)]
    assert netem.stats.sent_packets == 1
    assert netem.stats.sent_bytes == len(PACKET)


IMPAIRED = NetemSpec.parse(
    "delay 10ms 3ms 20% loss 10% duplicate 10% reorder 10% corrupt 10% rate 100mbit"
)


def test_same_seed_same_results() -> None:
    first, second = Netem(IMPAIRED, seed=7), Netem(IMPAIRED, seed=7)
    times = range(0, 500 * MS, MS)
    assert [first.enqueue(PACKET, t) for t in times] == [second.enqueue(PACKET, t) for t in times]
    assert first.stats == second.stats


def test_different_seeds_differ() -> None:
    first, second = Netem(IMPAIRED, seed=1), Netem(IMPAIRED, seed=2)
    assert send(first, 200) != send(second, 200)


def test_loss_fraction() -> None:
    netem = Netem(NetemSpec.parse("loss 50%"), seed=3)
    lost = sum(not out for out in send(netem, 10_000))
    assert 4500 <= lost <= 5500
    assert netem.stats.dropped == lost


def test_gilbert_elliott_loss_fraction() -> None:
    # Bernoulli special case: r = 1 - p, so the bad state (always lossy) holds p of the time.
    netem = Netem(NetemSpec.parse("loss gemodel 20%"), seed=4)
    lost = sum(not out for out in send(netem, 20_000))
    assert 3600 <= lost <= 4400


def test_gilbert_elliott_losses_come_in_bursts() -> None:
    netem = Netem(NetemSpec.parse("loss gemodel 1% 10%"), seed=5)
    lost = [not out for out in send(netem, 50_000)]
    runs = sum(1 for a, b in zip([False] + lost, lost, strict=False) if b and not a)
    assert sum(lost) / runs > 5  # mean burst length 1/r = 10 packets


def test_four_state_loss_fraction() -> None:
    netem = Netem(NetemSpec.parse("loss state 10%"), seed=6)
    lost = sum(not out for out in send(netem, 20_000))
    assert 1700 <= lost <= 2300


def test_duplicate() -> None:
    netem = Netem(NetemSpec.parse("duplicate 10%"), seed=8)
    outs = send(netem, 10_000)
    doubles = [out for out in outs if len(out) == 2]
    assert 800 <= len(doubles) <= 1200
    assert all(a == b == (0, PACKET) for a, b in doubles)
    assert netem.stats.duplicated == len(doubles)
    assert netem.stats.sent_packets == 10_000 + len(doubles)


def test_duplicates_are_delayed_independently() -> None:
    netem = Netem(NetemSpec.parse("delay 50ms 40ms duplicate 100%"), seed=9)
    outs = send(netem, 100)
    assert all(len(out) == 2 for out in outs)
    assert any(out[0][0] != out[1][0] for out in outs)


def test_a_lost_duplicate_still_goes_out_once() -> None:
    # netem_enqueue(): duplication adds a copy, loss takes one away.
    netem = Netem(NetemSpec.parse("loss 100% duplicate 100%"), seed=10)
    assert all(out == [(0, PACKET)] for out in send(netem, 100))


def test_corrupt_flips_exactly_one_bit() -> None:
    netem = Netem(NetemSpec.parse("corrupt 100%"), seed=11)
    positions = set()
    for [(_, packet)] in send(netem, 2_000):
        diff = [(i, a ^ b) for i, (a, b) in enumerate(zip(packet, PACKET, strict=True)) if a != b]
        assert len(diff) == 1 and bin(diff[0][1]).count("1") == 1
        positions.add(diff[0][0])
    assert len(positions) > 150  # anywhere in the packet
    assert netem.stats.corrupted == 2_000
    assert netem.enqueue(b"", 0) == [(0, b"")]  # nothing to flip


def test_reorder_sends_the_fraction_at_once() -> None:
    netem = Netem(NetemSpec.parse("delay 10ms reorder 25% limit 99999"), seed=12)
    outs = send(netem, 10_000)
    immediate = sum(out[0][0] == 0 for out in outs)
    assert 2300 <= immediate <= 2700
    assert all(out[0][0] in (0, 10 * MS) for out in outs)
    assert netem.stats.reordered == immediate


def test_reorder_gap_sends_every_gth_packet_at_once() -> None:
    # tc-netem(8): with "reorder 100% gap 5" every 5th packet goes at once.
    netem = Netem(NetemSpec.parse("delay 10ms reorder 100% gap 5"), seed=13)
    times = [out[0][0] for out in send(netem, 20)]
    assert [i for i, t in enumerate(times) if t == 0] == [4, 9, 14, 19]


@pytest.mark.parametrize("distribution", ["uniform", "normal", "pareto", "paretonormal"])
def test_delay_and_jitter_bounds(distribution: str) -> None:
    spec = NetemSpec.parse(f"delay 100ms 10ms distribution {distribution} limit 9999")
    netem = Netem(spec, seed=14)
    delays = [out[0][0] for out in send(netem, 5_000)]
    assert all(100 * MS - 40 * MS <= d <= 100 * MS + 40 * MS for d in delays)
    if distribution == "uniform":
        assert all(90 * MS <= d < 110 * MS for d in delays)
    assert abs(sum(delays) / len(delays) - 100 * MS) < 2 * MS  # netem's tables: mean = delay
    assert len(set(delays)) > 100


def test_delay_is_never_negative() -> None:
    netem = Netem(NetemSpec.parse("delay 1ms 10ms"), seed=15)
    assert all(out[0][0] >= 500 for out in send(netem, 1_000, now_ns=500))


def test_correlated_jitter_is_smoother() -> None:
    def mean_step(text: str) -> float:
        netem = Netem(NetemSpec.parse(f"{text} limit 9999"), seed=16)
        delays = [out[0][0] for out in send(netem, 2_000)]
        return sum(abs(a - b) for a, b in zip(delays, delays[1:], strict=False)) / len(delays)

    assert mean_step("delay 100ms 10ms 90%") < mean_step("delay 100ms 10ms") / 3


def test_rate_serializes_packets() -> None:
    # 1250 bytes at 1 Mbit/s take 10 ms each.
    netem = Netem(NetemSpec.parse("rate 1mbit"))
    packet = bytes(1250)
    times = [out[0][0] for out in send(netem, 5, packet)]
    assert times == [10 * MS, 20 * MS, 30 * MS, 40 * MS, 50 * MS]
    assert netem.enqueue(packet, 100 * MS) == [(110 * MS, packet)]  # idle link: no backlog


def test_rate_counts_overhead_and_cells() -> None:
    netem = Netem(NetemSpec.parse("rate 8000bit 10"))  # 1000 bytes/s: 1 ms per byte
    assert netem.enqueue(bytes(90), 0)[0][0] == 100 * MS
    cells = Netem(NetemSpec.parse("rate 8000bit 0 48 5"))  # 50 bytes -> 2 cells of 53
    assert cells.enqueue(bytes(50), 0)[0][0] == 106 * MS


def test_rate_adds_to_the_delay() -> None:
    netem = Netem(NetemSpec.parse("delay 5ms rate 1mbit"))
    times = [out[0][0] for out in send(netem, 3, bytes(1250))]
    assert times == [15 * MS, 25 * MS, 35 * MS]


def test_limit_drops_over_the_queue() -> None:
    netem = Netem(NetemSpec.parse("delay 1s limit 10"))
    outs = send(netem, 15)
    assert sum(bool(out) for out in outs) == 10
    assert netem.stats.overlimits == netem.stats.dropped == 5
    assert netem.enqueue(PACKET, 10**9) != []  # the queue drained when its packets left


def test_packets_sent_at_once_do_not_fill_the_queue() -> None:
    netem = Netem(NetemSpec.parse("limit 1"))
    assert all(out for out in send(netem, 100))


@given(specs(), st.integers(0, 10**12), st.binary(max_size=64))
def test_send_times_are_never_before_now(spec: NetemSpec, now_ns: int, packet: bytes) -> None:
    netem = Netem(spec, seed=0)
    for out in send(netem, 5, packet, now_ns):
        assert len(out) <= 2
        assert all(t >= now_ns and len(p) == len(packet) for t, p in out)
