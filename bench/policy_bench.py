"""The policy decision the gateway makes on every proxied request, measured in process on this machine.

    .venv/bin/python bench/policy_bench.py                 # 1,000 roles, 10,000 users, 200,000 requests
    .venv/bin/python bench/policy_bench.py --quick         # 50,000 requests
    .venv/bin/python bench/policy_bench.py --roles 5000 --users 50000 --requests 500000

The population (seeded, so runs compare): 200 MCP servers with 30 tools each; 1,000 roles, each listing 5-20
servers with tool allow/deny globs on some of them (and 1% reaching every server, as administrators do); 10,000
users holding 1-4 roles each, drawn with a mild popularity skew, which gives thousands of distinct role sets.

The request stream: a random user calls a tool; 90% of requests go to a server one of the user's roles lists, the
rest to any server (mostly refused); 95% of tool names are the server's own, the rest unknown names.

One decision is what the gateway does per `tools/call`: `Policy.access(roles, server)`, then, when the server is in
reach, `.permits("tools", name)`. Reported in µs per decision:
  - cold: a fresh `Policy` (compiled, every cache empty) over the stream once;
  - warm: the same stream again, and then a new stream of the same population;
  - the naive baseline, in the same run: what a gateway without a compiled policy does, fnmatch over each role's
    globs per request (`fnmatchcase` keeps its own cache of compiled globs, so this is not a straw man);
  - `Policy.profile(roles)` (session lifetime, MFA, models, budget), cold and warm;
  - the compile time and the memory of the compiled policy with its caches after the run (tracemalloc).
The target is under 20 µs per decision. Figures only: a benchmark never fails on a number.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: the `bench` package

from bench._common import num, table

from chamberlain.policy.decisions import Policy
from chamberlain.policy.roles import ANY, RolesDocument

TARGET_US = 20.0
TOOLS_PER_SERVER = 30
VERBS = ("get", "list", "search", "create", "update", "delete", "admin", "export", "run", "describe")
NOUNS = ("issue", "repo", "file", "user", "table", "query", "report", "job", "secret", "branch", "bucket", "page")
# Rule shapes enterprises write: read-only, everything but destructive, a named few.
ALLOW_SHAPES = (("*",), ("get_*", "list_*", "search_*", "describe_*"), ("get_*", "list_*"), ("*_issue", "*_report"))
DENY_SHAPES = ((), ("delete_*", "admin_*"), ("admin_*",), ("*_secret", "delete_*", "export_*"))

Request = tuple[tuple[str, ...], str, str]  # (roles, server, tool name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the least is reported")
    parser.add_argument("--quick", action="store_true", help="50,000 requests: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.requests = 50_000
        args.repeats = 1
    return args


@dataclass
class Population:
    document: RolesDocument
    raw: dict[str, Any]  # the document as JSON data
    servers: list[str]
    tools: dict[str, list[str]]
    users: list[tuple[str, ...]]  # each user's roles, as a verified token carries them


def build_population(rng: random.Random, server_count: int, role_count: int, user_count: int) -> Population:
    servers = [f"srv-{index:03d}" for index in range(server_count)]
    catalog = [f"{verb}_{noun}" for verb in VERBS for noun in NOUNS]
    tools = {server: rng.sample(catalog, TOOLS_PER_SERVER) for server in servers}
    roles: dict[str, Any] = {}
    for index in range(role_count):
        administrator = index % 100 == 0
        listed = sorted(rng.sample(servers, rng.randint(5, 20)))
        role: dict[str, Any] = {
            "mcp_servers": ANY if administrator else listed,
            "data_classification_access": ["public", "internal"] if index % 3 else ["public"],
            "session_duration": rng.choice((60, 240, 480, 720)),
        }
        if administrator:
            role["administrative_functions"] = True
        ruled = rng.sample(listed, rng.randint(1, min(5, len(listed)))) if rng.random() < 0.6 else []
        if ruled:
            role["tools"] = {
                server: {"allow": list(rng.choice(ALLOW_SHAPES)), "deny": list(rng.choice(DENY_SHAPES))}
                for server in ruled
            }
        if rng.random() < 0.3:
            role["models"] = rng.choice((["claude-haiku-*"], ["claude-sonnet-*", "claude-haiku-*"], "*"))
            if rng.random() < 0.7:
                role["budget"] = {"monthly_usd": rng.choice((50, 100, 250, 1000))}
        role["mfa"] = rng.choice(("off", "optional", "optional", "enforced"))
        roles[f"role-{index:04d}"] = role
    raw = {"enterprise_roles": roles}
    names = list(roles)
    # A mild popularity skew (weight 1/sqrt(rank)): some roles are common ("developer"), most are niche.
    weights = [1 / (rank + 1) ** 0.5 for rank in range(len(names))]
    users = []
    for _ in range(user_count):
        held = {*rng.choices(names, weights, k=rng.randint(1, 4))}
        users.append(tuple(sorted(held)))
    return Population(RolesDocument.model_validate(raw), raw, servers, tools, users)


def build_stream(rng: random.Random, population: Population, count: int) -> list[Request]:
    reach: dict[tuple[str, ...], list[str]] = {}
    for held in set(population.users):
        reachable: set[str] = set()
        for name in held:
            listed = population.raw["enterprise_roles"][name]["mcp_servers"]
            reachable.update(population.servers if listed == ANY else listed)
        reach[held] = sorted(reachable)
    stream = []
    for _ in range(count):
        held = rng.choice(population.users)
        server = rng.choice(reach[held]) if rng.random() < 0.9 else rng.choice(population.servers)
        name = rng.choice(population.tools[server]) if rng.random() < 0.95 else f"unknown_{rng.randrange(10**6)}"
        stream.append((held, server, name))
    return stream


def compiled_decision(policy: Policy) -> Callable[[Request], bool]:
    access = policy.access

    def decide(request: Request) -> bool:
        held, server, name = request
        granted = access(held, server)
        return granted is not None and granted.permits("tools", name)

    return decide


def naive_decision(document: RolesDocument) -> Callable[[Request], bool]:
    """Per request: every role the caller holds, its server list, then fnmatch over its globs (deny wins)."""
    roles = document.enterprise_roles

    def decide(request: Request) -> bool:
        held, server, name = request
        for role_name in held:
            role = roles.get(role_name)
            if role is None or not (role.mcp_servers == ANY or server in role.mcp_servers):
                continue
            rules = role.tools.get(server)
            if rules is None:
                return True
            if any(fnmatchcase(name, glob) for glob in rules.deny):
                continue
            if any(fnmatchcase(name, glob) for glob in rules.allow):
                return True
        return False

    return decide


def per_call_us(decide: Callable[[Request], Any], stream: Sequence[Request]) -> float:
    """CPU µs per call over the stream (process time: a shared machine's other work is not charged to it)."""
    gc.collect()
    started = time.process_time()
    for request in stream:
        decide(request)
    return 1e6 * (time.process_time() - started) / len(stream)


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    """The least of several runs, as timeit reports: noise only ever adds time."""
    return min(measure() for _ in range(repeats))


def percentiles_us(decide: Callable[[Request], Any], stream: Sequence[Request]) -> tuple[float, float]:
    """p50 and p99 of single decisions (each timed alone: the clock adds about 0.1 µs to each)."""
    clock = time.perf_counter_ns
    samples = []
    for request in stream:
        started = clock()
        decide(request)
        samples.append(clock() - started)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def cpu_seconds(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.process_time()
    work()
    return time.process_time() - started


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    population = build_population(rng, args.servers, args.roles, args.users)
    stream = build_stream(rng, population, args.requests)
    fresh_stream = build_stream(rng, population, args.requests)
    role_sets = len(set(population.users))
    pairs = len({(held, server) for held, server, _ in stream})
    print(
        f"policy_bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.servers} servers x "
        f"{TOOLS_PER_SERVER} tools, {args.roles:,} roles, {args.users:,} users holding {role_sets:,} distinct "
        f"role sets; {args.requests:,} requests over {pairs:,} distinct (role set, server) pairs"
    )

    repeats = args.repeats
    compile_ms = 1000 * min(cpu_seconds(lambda: Policy(population.document)) for _ in range(repeats))
    policy = Policy(population.document)
    decide = compiled_decision(policy)
    naive = naive_decision(population.document)
    # Cold: each run starts from a freshly compiled policy, so every cache miss of the stream is paid.
    cold = best_of(repeats, lambda: per_call_us(compiled_decision(Policy(population.document)), stream))
    per_call_us(decide, stream)
    warm = best_of(repeats, lambda: per_call_us(decide, stream))
    warm_fresh = best_of(repeats, lambda: per_call_us(decide, fresh_stream))
    p50, p99 = percentiles_us(decide, fresh_stream)
    naive_first = per_call_us(naive, stream)  # fnmatch's own glob cache starts empty here
    naive_warm = best_of(repeats, lambda: per_call_us(naive, stream))
    naive_p50, naive_p99 = percentiles_us(naive, fresh_stream)

    # Both must agree on every request, or the comparison means nothing.
    disagreements = sum(decide(request) != naive(request) for request in fresh_stream)
    allowed = sum(decide(request) for request in fresh_stream) / len(fresh_stream)

    profile_stream = [(held, "", "") for held, _, _ in stream]

    def profiles(of: Policy) -> Callable[[Request], Any]:
        return lambda request: of.profile(request[0])

    profile_cold = best_of(repeats, lambda: per_call_us(profiles(Policy(population.document)), profile_stream))
    profile_policy = Policy(population.document)
    per_call_us(profiles(profile_policy), profile_stream)
    profile_warm = best_of(repeats, lambda: per_call_us(profiles(profile_policy), profile_stream))

    tracemalloc.start()
    measured = Policy(population.document)
    compiled_bytes = tracemalloc.get_traced_memory()[0]
    measured_decide = compiled_decision(measured)
    for request in stream:
        measured_decide(request)
    for request in profile_stream:
        measured.profile(request[0])
    with_caches_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    sizes = measured.cache_sizes()

    rows = [
        ["decision, cold (fresh policy, empty caches)", num(cold, 2), num(naive_first, 2), num(naive_first / cold, 1)],
        ["decision, warm (same stream again)", num(warm, 2), num(naive_warm, 2), num(naive_warm / warm, 1)],
        ["decision, warm (new stream)", num(warm_fresh, 2), "", ""],
        ["decision p50 / p99 (timed one by one)", f"{p50:.2f} / {p99:.2f}", f"{naive_p50:.2f} / {naive_p99:.2f}", ""],
        ["Policy.profile(roles), cold", num(profile_cold, 2), "", ""],
        ["Policy.profile(roles), warm", num(profile_warm, 2), "", ""],
    ]
    print()
    print(table(["CPU µs per call", "compiled", "naive fnmatch", "naive / compiled"], rows))
    print()
    print(f"compile {num(compile_ms, 1)} ms for {args.roles:,} roles")
    print(
        f"memory: compiled policy {num(compiled_bytes / 2**20, 1)} MiB, with its caches after the stream "
        f"{num(with_caches_bytes / 2**20, 1)} MiB (entries: {sizes['combined']:,} combined grants, "
        f"{sizes['names']:,} name decisions, {sizes['profiles']:,} profiles; every cache is bounded)"
    )
    print(f"{100 * allowed:.1f}% of requests allowed; compiled and naive disagree on {disagreements} requests")
    worst = max(cold, warm, warm_fresh)
    verdict = "met" if worst < TARGET_US else "NOT met"
    print(f"target < {TARGET_US:g} µs per decision: {verdict} (slowest mean {worst:.2f} µs)")
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
