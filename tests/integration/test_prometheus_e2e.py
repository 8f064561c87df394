"""End to end: a real Prometheus scrapes a real worker fed through a real broker.

A burst of hard bounces and deliveries goes through Kafka into ``python -m consumer run``;
a Prometheus server (Debian's package, from ``deploy/prometheus/fetch-prometheus``)
scrapes the worker every second, evaluates ``deploy/prometheus/rules.yaml`` every second,
and the test reads the hard-bounce rate recording rules and the firing HardBounceRateHigh
alert back through Prometheus' HTTP API.

How ``rate()`` behaves on a few seconds of data decides the design:

* A counter series is born at its first increment, so ``rate()`` never sees that first
  increment.  The worker therefore first gets a small warm-up (3 hard bounces, 7
  deliveries), Prometheus scrapes it, and only then comes the burst (180 + 420).  The
  rates count the burst: 180 / 600 = 30% hard bounces.
* Over a window longer than the data, ``rate()`` extrapolates each series by up to half a
  scrape interval, limited by how far the series could go back before reaching 0.  The
  warm-up has the burst's proportions (3:7 like 180:420), so both series extrapolate
  alike and their ratio stays 30%; the assertion still allows half a percentage point in
  case a scrape caught the warm-up half counted.
* HardBounceRateHigh needs 500 final events from a provider in the hour: the burst's 600
  is above that even without extrapolation.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafkatools import Topics, produce
from workers import (
    ChildWorker,
    dsn_payload,
    free_port,
    fully_committed,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "deploy" / "prometheus" / "fetch-prometheus"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
JOB = "bounce-consumer"

WARMUP_BOUNCES, WARMUP_DELIVERED = 3, 7
BURST_BOUNCES, BURST_DELIVERED = 180, 420
EXPECTED_RATE = BURST_BOUNCES / (BURST_BOUNCES + BURST_DELIVERED)
TOLERANCE = 0.005

# The production rules keep an alert pending for 5 to 15 minutes ("for:"), far beyond a
# test.  The test runs a copy of rules.yaml in which every "for:" is 2 s and nothing else
# changes: same expressions, thresholds, labels and annotations.
TEST_FOR = "2s"
_FOR = re.compile(r"^(?P<indent>\s+)for:\s*\S+\s*$", re.MULTILINE)


def _payloads(start: int, bounces: int, delivered: int) -> list[bytes]:
    """Hard bounces and deliveries to distinct gmail.com addresses, interleaved."""
    out = [dsn_payload(f"hb{start + i}@gmail.com", bounced=True) for i in range(bounces)]
    out += [dsn_payload(f"ok{start + i}@gmail.com", bounced=False) for i in range(delivered)]
    # Interleave, so that every poll batch has both kinds, as real traffic does.
    return out[::2] + out[1::2]


def _test_rules(path: Path) -> None:
    """Write rules.yaml with every alert's ``for:`` shortened to TEST_FOR."""
    text = RULES.read_text(encoding="utf-8")
    alerts = len(re.findall(r"^\s+- alert:", text, re.MULTILINE))
    shortened, count = _FOR.subn(rf"\g<indent>for: {TEST_FOR}", text)
    assert count == alerts, f"{count} 'for:' lines for {alerts} alerts in {RULES}"
    path.write_text(shortened, encoding="utf-8")


class PrometheusServer:
    """A Prometheus child process with its own config, data and log in a temp dir."""

    def __init__(self, bin_dir: Path, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        rules = workdir / "rules.yaml"
        _test_rules(rules)
        config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "scrape_interval": "1s",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        }
                    ],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(bin_dir / "prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str, **params: str) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}{path}{query}", timeout=5
        ) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited early:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/-/ready", timeout=2
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: [{"metric": {...}, "value": [t, "v"]}]."""
        body = self._get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it has no sample."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        body = self._get("/api/v1/alerts")
        assert body["status"] == "success", body
        return list(body["data"]["alerts"])

    def firing(self) -> list[dict[str, Any]]:
        return [alert for alert in self.alerts() if alert["state"] == "firing"]


@pytest.fixture
def prometheus_bin() -> Path:
    """The directory of ``prometheus`` and ``promtool``; fails (never skips) without them."""
    found = subprocess.run([str(FETCH)], capture_output=True, text=True, timeout=600, check=False)
    if found.returncode != 0:
        pytest.fail(f"{FETCH} failed ({found.returncode}):\n{found.stderr}", pytrace=False)
    return Path(found.stdout.strip())


@pytest.fixture
def worker_port() -> int:
    """A free loopback port for the worker's /metrics, known before Prometheus starts."""
    return free_port()


@pytest.fixture
def prometheus(
    prometheus_bin: Path, tmp_path: Path, worker_port: int
) -> Iterator[PrometheusServer]:
    """A Prometheus scraping 127.0.0.1:``worker_port`` as job bounce-consumer, stopped after."""
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = PrometheusServer(prometheus_bin, workdir, worker_port)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)


async def test_hard_bounce_burst_fires_alert_through_prometheus(
    kafka_bootstrap: str,
    topics: Topics,
    group_id: str,
    tmp_path: Path,
    prometheus: PrometheusServer,
    worker_port: int,
) -> None:
    """A hard-bounce burst through Kafka shows as a 30% rate in Prometheus and fires HardBounceRateHigh."""
    # The warm-up is in the topic before the worker starts, on one partition: the
    # worker's first poll counts it as one batch, so no scrape sees it half counted.
    await produce(
        kafka_bootstrap,
        topics.raw,
        _payloads(0, WARMUP_BOUNCES, WARMUP_DELIVERED),
        partition=0,
    )
    worker = ChildWorker(
        worker_env(
            kafka_bootstrap,
            topics,
            group_id,
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(worker_port),
        ),
        tmp_path / "worker.log",
    )
    try:
        await wait_until(prometheus.ready, 30, "prometheus ready")
        await wait_until(lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1, 30, "worker scraped")
        events = f'sum(mailevents_events_total{{job="{JOB}",provider="dsn"}})'
        warmup = WARMUP_BOUNCES + WARMUP_DELIVERED
        await wait_until(lambda: prometheus.value(events) == warmup, 60, "warm-up scraped")

        await produce(
            kafka_bootstrap,
            topics.raw,
            _payloads(warmup, BURST_BOUNCES, BURST_DELIVERED),
        )
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 60, "burst committed"
        )
        total = warmup + BURST_BOUNCES + BURST_DELIVERED
        await wait_until(lambda: prometheus.value(events) == total, 30, "burst scraped")

        # The recording rules, at the cell (provider dsn, mailbox group gmail) and per provider.
        rules = {
            "provider_mailbox:mailevents_hard_bounce_rate:ratio_rate5m"
            '{provider="dsn",mailbox_provider="gmail"}': None,
            "provider_mailbox:mailevents_hard_bounce_rate:ratio_rate1h"
            '{provider="dsn",mailbox_provider="gmail"}': None,
            'provider:mailevents_hard_bounce_rate:ratio_rate1h{provider="dsn"}': None,
        }

        def rates_settled() -> bool:
            for expr in rules:
                rules[expr] = prometheus.value(expr)
            return all(
                value is not None and abs(value - EXPECTED_RATE) <= TOLERANCE
                for value in rules.values()
            )

        try:
            await wait_until(rates_settled, 20, f"hard-bounce rates of {EXPECTED_RATE:.0%}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last values: {rules}") from None
        # A hard bounce is a Bounce: with only bounces and deliveries they are the same rate,
        # and the delivered rate is the rest.
        bounce = prometheus.value(
            'provider_mailbox:mailevents_bounce_rate:ratio_rate5m{provider="dsn"}'
        )
        delivered = prometheus.value(
            'provider_mailbox:mailevents_delivered_rate:ratio_rate5m{provider="dsn"}'
        )
        assert bounce is not None and abs(bounce - EXPECTED_RATE) <= TOLERANCE, bounce
        assert delivered is not None and abs(delivered - (1 - EXPECTED_RATE)) <= TOLERANCE
        volume = prometheus.value('provider:mailevents_final_events:rate1h{provider="dsn"} * 3600')
        assert volume is not None and volume >= BURST_BOUNCES + BURST_DELIVERED, volume

        # 30% is above both lines (2% warning, 5% critical); nothing else fires.
        def only_hard_bounce_alerts_fire() -> bool:
            names = {alert["labels"]["alertname"] for alert in prometheus.firing()}
            return names == {"HardBounceRateHigh"}

        try:
            await wait_until(only_hard_bounce_alerts_fire, 20, "HardBounceRateHigh firing alone")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; active alerts: {prometheus.alerts()}") from None
        firing = {
            alert["labels"]["severity"]: alert
            for alert in prometheus.firing()
            if alert["labels"]["alertname"] == "HardBounceRateHigh"
        }
        assert set(firing) == {"warning", "critical"}, firing
        for alert in firing.values():
            assert alert["labels"]["provider"] == "dsn"
            assert abs(float(alert["value"]) - EXPECTED_RATE) <= TOLERANCE
            annotations = alert["annotations"]
            assert annotations["summary"].startswith("Hard-bounce rate of dsn is 3"), annotations
            assert annotations["runbook_url"] == "docs/alerts.md#hardbounceratehigh"
    finally:
        worker.ensure_stopped()
        prometheus.stop()
