"""Load benchmark against the running service (``make bench-service``): latency p50/p95/p99
and throughput for claims with 1, 2 and 4 periapical radiographs at concurrency 1, 4 and
16, the mean time per stage from the service's own Prometheus histograms, and the service
overhead (HTTP + Ray + decoding + validation + rules + store) over calling the models
directly in one process.

Targets on 2 CPU cores: p95 <= 1.0 s for a two-periapical claim at concurrency 1; overhead
<= 30 ms at p50. The service runs as ``dxv serve`` in a child process (one ingress replica,
so that the stage histograms are those of every request).

    python -m evaluation.bench_service [--requests 24] [--port 8766] [--set http.front=serve]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from datasets.synth.generator import case_dicom_bytes, generate_case
from evaluation.machine_speed import describe as machine_reference
from evaluation.service_demo import running_service
from models.inference import DentalReader
from models.radiographs import RadiographKind

IMAGE_COUNTS = (1, 2, 4)
CONCURRENCY = (1, 4, 16)
STAGES = ("request", "queue", "decode", "models", "model_transport", "adjudication")
MEMBERS = 2000


def _images(n: int) -> list[tuple[str, bytes, np.ndarray]]:
    cases = [generate_case(RadiographKind.PERIAPICAL, 808, i) for i in range(n)]
    return [(c.image_id, case_dicom_bytes(c), c.pixels_unit) for c in cases]


class ClaimFactory:
    """Claims as normal traffic: fresh claim ids (nothing is replayed), a different member
    each time, radiographs never sent before (no recycled-image matches), coded as a clinic
    codes them: D0220 for the first periapical, D0230 for each additional one, each line on
    a tooth its image shows (two lines of one code on one tooth would be an exact duplicate)."""

    def __init__(self, members: int, seed: int = 808) -> None:
        self.members, self.seed = members, seed
        self.counter = 0
        self.next_image = 0
        self.lock = threading.Lock()

    def images(self, n: int) -> list[tuple[str, str, tuple[int, ...]]]:
        """(radiograph id, base64 DICOM, the FDI numbers of the teeth it shows) for ``n`` new ones."""
        with self.lock:
            first, self.next_image = self.next_image, self.next_image + n
        cases = [generate_case(RadiographKind.PERIAPICAL, self.seed, i) for i in range(first, first + n)]
        return [(c.image_id, base64.b64encode(case_dicom_bytes(c)).decode("ascii"),
                 tuple(t.fdi for t in c.annotations.teeth)) for c in cases]

    def make(self, n_images: int) -> dict:
        with self.lock:
            self.counter += 1
            number = self.counter
        member = f"SYN-{(number - 1) % self.members + 1:05d}"
        birth = f"{1950 + ((number - 1) % self.members + 1) % 50}-06-15"
        images = self.images(n_images)
        lines, used = [], set()
        for k, (_, _, teeth) in enumerate(images):
            tooth = next((t for t in teeth if t not in used), teeth[0])
            used.add(tooth)
            lines.append({"line_id": str(k + 1), "code": "D0220" if k == 0 else "D0230", "tooth": str(tooth),
                          "tooth_system": "FDI", "fee": 30.0 if k == 0 else 25.0})
        return {"claim_id": f"BENCH-{number:06d}", "tenant": "demo",
                "member": {"member_id": member, "birth_date": birth}, "provider": {"provider_id": f"PRV-00{number % 3 + 1}"},
                "date_of_service": "2026-05-04", "lines": lines,
                "attachments": [{"radiograph_id": rid, "kind": "periapical", "content": content}
                                for rid, content, _ in images]}


def store_earlier_radiographs(url: str, count: int, seed: int = 9) -> None:
    """``count`` earlier periapicals of other members and providers in the tenant's history,
    as a service in use has (the benchmark's claims otherwise meet an empty one): random
    fingerprints, which match none of the claims' radiographs but are ranked for likeness
    against each of them."""
    from serving.claims import Claim
    from serving.fingerprints import Fingerprint
    from serving.rules.recycled import ImagePrint
    from serving.store import repository
    from serving.store.database import Store

    rng = np.random.default_rng(seed)
    store = Store.open(url)
    try:
        with store.transaction() as session:
            for number in range(count):
                claim = Claim.model_validate({
                    "claim_id": f"EARLIER-{number:06d}", "tenant": "demo", "date_of_service": "2026-01-15",
                    "member": {"member_id": f"EARLIER-M-{number % 3000:05d}", "birth_date": "1970-01-01"},
                    "provider": {"provider_id": f"EARLIER-P-{number % 200:03d}"},
                    "lines": [{"line_id": "1", "code": "D0220"}]})
                coarse = rng.standard_normal(64).astype(np.float32)
                printed = Fingerprint(rng.integers(0, 256, (48, 48), dtype=np.uint8), coarse / np.linalg.norm(coarse))
                repository.save_fingerprints(session, claim, (ImagePrint(f"earlier-{number}", "periapical", printed),),
                                             dt.datetime(2026, 1, 15))
    finally:
        store.close()


def stage_totals(client: httpx.Client) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) per stage from ``/metrics``."""
    totals: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name != "dxv_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if stage in totals and sample.name.endswith("_sum"):
                totals[stage][0] = sample.value
            elif stage in totals and sample.name.endswith("_count"):
                totals[stage][1] = sample.value
    return {s: (v[0], v[1]) for s, v in totals.items()}


def run_setting(base_url: str, key: str, factory: ClaimFactory, n_images: int, concurrency: int,
                requests: int) -> dict:
    headers = {"X-API-Key": key}
    latencies: list[float] = []
    failures = 0
    clients = [httpx.Client(base_url=base_url, timeout=300, headers=headers) for _ in range(concurrency)]

    # Made and encoded before the clock starts: encoding a claim's JSON takes the client
    # about 2 ms per radiograph, which is not the service's time.
    bodies = [json.dumps(factory.make(n_images)).encode("utf-8") for _ in range(requests)]

    def one(i: int) -> None:
        nonlocal failures
        body = bodies[i]
        start = time.perf_counter()
        answer = clients[i % concurrency].post("/v1/claims:validate", content=body,
                                               headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - start
        if answer.status_code == 200:
            latencies.append(elapsed)
        else:
            failures += 1

    # A liveness probe every 0.2 s while the claims are in flight: what a load balancer's or
    # Kubernetes' probe meets on a busy replica (it must not wait behind the claims).
    probe_ms: list[float] = []
    busy = threading.Event()

    def probe_while_busy() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as prober:
            while not busy.wait(0.2):
                start = time.perf_counter()
                prober.get("/healthz")
                probe_ms.append((time.perf_counter() - start) * 1000)

    with httpx.Client(base_url=base_url, timeout=60) as probe:
        before = stage_totals(probe)
        started = time.perf_counter()
        prober = threading.Thread(target=probe_while_busy, daemon=True)
        prober.start()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
        busy.set()
        prober.join()
        after = stage_totals(probe)
    for c in clients:
        c.close()
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    per_stage = {}
    for stage in STAGES:
        seconds, count = after[stage][0] - before[stage][0], after[stage][1] - before[stage][1]
        per_stage[stage] = seconds / count * 1000 if count else float("nan")
    return {"images": n_images, "concurrency": concurrency, "requests": len(latencies), "failures": failures,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "claims_per_s": len(latencies) / wall,
            "images_per_s": len(latencies) * n_images / wall, "stage_mean_ms": per_stage,
            "healthz_busy_p50_ms": float(np.percentile(probe_ms, 50)) if probe_ms else float("nan"),
            "healthz_busy_max_ms": max(probe_ms, default=float("nan"))}


def healthz_p50_ms(base_url: str, requests: int = 200) -> float:
    """``GET /healthz`` one after another: the floor of any request (the front on the
    port, the ingress replica's HTTP server, FastAPI), with no model or store work."""
    times = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(requests):
            start = time.perf_counter()
            client.get("/healthz").raise_for_status()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def refused_claim_p50_ms(base_url: str, key: str, factory: ClaimFactory, n_images: int, requests: int = 30) -> float:
    """A claim of ``n_images`` refused once its body is read and parsed (another tenant's:
    403), so neither models nor rules run: the floor of a claim's HTTP path for that body
    size (HTTP, the front, the body's trip, parsing, base64)."""
    bodies = []
    for _ in range(requests + 3):
        claim = factory.make(n_images)
        claim["tenant"] = "another-tenant"
        bodies.append(json.dumps(claim).encode("utf-8"))
    times = []
    with httpx.Client(base_url=base_url, timeout=60, headers={"X-API-Key": key}) as client:
        for body in bodies:
            start = time.perf_counter()
            answer = client.post("/v1/claims:validate", content=body, headers={"content-type": "application/json"})
            times.append(time.perf_counter() - start)
            if answer.status_code != 403:
                raise RuntimeError(f"expected the claim refused for its tenant, got {answer.status_code}: {answer.text}")
    return statistics.median(times[3:]) * 1000  # the first few warm the path up


def baseline_reader(overrides: tuple[str, ...]) -> DentalReader:
    """The models the service reads with (its config with the benchmark's overrides: the
    same files, the same precision), in this process with 2 threads as the model replica:
    the baseline the overhead is measured against. With ``--set models.precision=fp32`` a
    baseline read from the int8 copy counted the float file's extra time as overhead."""
    from models.inference import DentalReader
    from serving.model_sources import resolve_model_dir
    from serving.service_config import load_serving_config

    config = load_serving_config(overrides=overrides)
    model_dir, _ = resolve_model_dir(config)
    return DentalReader.from_directory(model_dir, threads=2, precision=config.models.precision)


def direct_model_times_ms(reader: DentalReader, images: list[tuple[str, bytes, np.ndarray]], n_images: int,
                          repeats: int = 15) -> list[float]:
    """The models alone for a claim of ``n_images`` periapicals (ms per claim)."""
    for rid, _, pixels in images[:2]:  # warm-up
        reader.read(rid, pixels, RadiographKind.PERIAPICAL, operating_point=False)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        for k in range(n_images):
            rid, _, pixels = images[(r * n_images + k) % len(images)]
            reader.read(rid, pixels, RadiographKind.PERIAPICAL, operating_point=False)
        times.append((time.perf_counter() - start) * 1000)
    return times


@dataclass(frozen=True)
class PairedOverheads:
    """Per claim, the service's time less the same radiographs' in this process: ``over_models``
    with the models given decoded pixels (decoding counts as the service's overhead, the
    strict figure), ``over_files`` with the files decoded and then read (what calling the
    models directly on the radiographs as sent costs; decoding is no part of "HTTP, Ray,
    validation and rules")."""

    over_models: list[float]
    over_files: list[float]
    # The same requests split by their own Server-Timing header: the latency less the models'
    # time inside the service (no second reading, so the machine's drift between the two
    # readings cannot enter), and the models' time inside the service less in this process.
    outside_models: list[float]
    models_slower_in_service: list[float]


def paired_overheads_ms(base_url: str, key: str, factory: ClaimFactory, reader, n_images: int,
                        requests: int) -> PairedOverheads:
    """Per claim: the service's time, then the same radiographs in this process right after
    (decoded, then read by the models; each timed). Pairing each claim with its own baseline
    cancels the machine's drift over minutes (10-20 % here, and more on a bad day), which a
    baseline taken before and after the service cannot."""
    from datasets.readers import read_radiograph

    over_models, over_files, outside_models, models_slower = [], [], [], []
    with httpx.Client(base_url=base_url, timeout=300, headers={"X-API-Key": key}) as client:
        for _ in range(requests):
            claim = factory.make(n_images)
            body = json.dumps(claim).encode("utf-8")
            files = [base64.b64decode(a["content"]) for a in claim["attachments"]]
            start = time.perf_counter()
            answer = client.post("/v1/claims:validate", content=body, headers={"content-type": "application/json"})
            service = time.perf_counter() - start
            answer.raise_for_status()
            start = time.perf_counter()
            pixels = [read_radiograph(data).pixels_unit for data in files]
            decoded = time.perf_counter()
            for i, image in enumerate(pixels):
                reader.read(f"direct-{i}", image, RadiographKind.PERIAPICAL, operating_point=False)
            done = time.perf_counter()
            over_models.append((service - (done - decoded)) * 1000)
            over_files.append((service - (done - start)) * 1000)
            in_service = server_timing_ms(answer.headers.get("server-timing", ""))["models"]
            outside_models.append(service * 1000 - in_service)
            models_slower.append(in_service - (done - decoded) * 1000)
    return PairedOverheads(over_models, over_files, outside_models, models_slower)


def server_timing_ms(header: str) -> dict[str, float]:
    """A ``Server-Timing`` header's stages (name -> milliseconds)."""
    spent = {}
    for part in filter(None, (p.strip() for p in header.split(","))):
        name, _, params = part.partition(";")
        spent[name] = next((float(v) for k, _, v in (q.partition("=") for q in params.split(";")) if k == "dur"), 0.0)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24, help="requests per setting (at least 2 x concurrency)")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--out", type=Path, default=Path("data/bench/service"))
    parser.add_argument("--images", type=int, nargs="+", default=list(IMAGE_COUNTS), help="radiographs per claim")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--ready-timeout", type=float, default=420.0, help="seconds to wait for the service to start")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a serving config override, e.g. http.front=serve to compare the fronts")
    parser.add_argument("--paired", type=int, default=30,
                        help="claims per image count whose overhead is measured against the models on the same "
                             "radiographs right after (0: none)")
    parser.add_argument("--stored-radiographs", type=int, default=0,
                        help="earlier radiographs in the tenant's history before the first claim (default: none)")
    args = parser.parse_args()
    image_counts, concurrencies = tuple(args.images), tuple(args.concurrency)
    images = _images(12)
    factory = ClaimFactory(members=MEMBERS)
    print(machine_reference(), flush=True)
    # The baseline is taken before the service starts and again after it stops, and the
    # median of both is used: this shared machine's speed drifts by 10-20 % over minutes,
    # and one reading taken minutes before the service's moved the overhead as much.
    reader = baseline_reader(tuple(args.overrides))
    before = {n: direct_model_times_ms(reader, images, n) for n in image_counts}
    results = []
    paired: dict[int, float] = {}
    print(f"earlier radiographs in the tenant's history: {args.stored_radiographs:,}", flush=True)
    history = functools.partial(store_earlier_radiographs, count=args.stored_radiographs) if args.stored_radiographs else None
    with running_service(args.out, args.port, overrides=("autoscaling.max_replicas=1", *args.overrides),
                         extra_members=MEMBERS, ready_timeout_s=args.ready_timeout, prepare=history) as (base_url, key):
        run_setting(base_url, key, factory, 2, 1, 4)  # warm-up: first requests load lazily
        floor = healthz_p50_ms(base_url)
        print(f"GET /healthz p50 {floor:.1f} ms (the floor of any request)", flush=True)
        for n_images in image_counts:
            print(f"{n_images} image(s): a claim refused once read and parsed (403) p50 "
                  f"{refused_claim_p50_ms(base_url, key, factory, n_images):.1f} ms (its HTTP path alone)", flush=True)
        for n_images in image_counts:
            for concurrency in concurrencies:
                result = run_setting(base_url, key, factory, n_images, concurrency,
                                     max(args.requests, 2 * concurrency))
                results.append(result)
                stages = ", ".join(f"{s} {v:.0f}" for s, v in result["stage_mean_ms"].items())
                print(f"{n_images} image(s), concurrency {concurrency:2d}: p50 {result['p50_ms']:.0f} ms, "
                      f"p95 {result['p95_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
                      f"{result['claims_per_s']:.2f} claims/s = {result['images_per_s']:.2f} images/s "
                      f"({result['requests']} ok, {result['failures']} failed); stage means ms: {stages}; "
                      f"GET /healthz meanwhile p50 {result['healthz_busy_p50_ms']:.0f} ms, "
                      f"max {result['healthz_busy_max_ms']:.0f} ms", flush=True)
        if args.paired:
            for n_images in image_counts:
                overheads = paired_overheads_ms(base_url, key, factory, reader, n_images, args.paired)
                paired[n_images] = statistics.median(overheads.over_models)
                print(f"{n_images} image(s), paired with the models on the same radiographs: overhead p50 "
                      f"{paired[n_images]:.0f} ms (p25 {np.percentile(overheads.over_models, 25):.0f}, p75 "
                      f"{np.percentile(overheads.over_models, 75):.0f}; target <= 30 ms); over decoding the files "
                      f"and the models: p50 {statistics.median(overheads.over_files):.0f} ms", flush=True)
                print(f"{n_images} image(s), by the service's own Server-Timing: everything but the models p50 "
                      f"{statistics.median(overheads.outside_models):.0f} ms (p25 "
                      f"{np.percentile(overheads.outside_models, 25):.0f}, p75 "
                      f"{np.percentile(overheads.outside_models, 75):.0f}); the models inside the service less in "
                      f"this process p50 {statistics.median(overheads.models_slower_in_service):+.0f} ms", flush=True)
    after = {n: direct_model_times_ms(reader, images, n) for n in image_counts}
    drift = {n: f"{statistics.median(before[n]):.0f} before, {statistics.median(after[n]):.0f} after"
             for n in image_counts}
    direct = {n: statistics.median(before[n] + after[n]) for n in image_counts}
    two = next((r for r in results if r["images"] == 2 and r["concurrency"] == 1), None)
    if two is not None:
        print(f"\n2-periapical claim at concurrency 1: p95 {two['p95_ms']:.0f} ms (target <= 1000 ms)")
    for n_images in image_counts:
        single = next((r for r in results if r["images"] == n_images and r["concurrency"] == 1), None)
        if single is None:
            continue
        print(f"{n_images} image(s): service p50 {single['p50_ms']:.0f} ms, models alone p50 {direct[n_images]:.0f} ms "
              f"({drift[n_images]}), "
              f"overhead {single['p50_ms'] - direct[n_images]:.0f} ms"
              + (f", paired {paired[n_images]:.0f} ms" if n_images in paired else "") + " (target <= 30 ms)")


if __name__ == "__main__":
    main()
