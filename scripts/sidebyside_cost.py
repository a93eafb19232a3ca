"""CPU per unit of work, for scripts/sidebyside.

  sidebyside_cost.py snapshot FILE
      write "pid ppid exe ticks rss_kib cmdline" for every process to FILE
  sidebyside_cost.py hook before|after STEP OUTDIR
      the harness's STEP_HOOK: a snapshot to OUTDIR/cpu-STEP-before|after.txt
  sidebyside_cost.py programs BEFORE AFTER SECONDS CLIENT_TICKS
      CPU per program between two snapshots, and resident memory after
  sidebyside_cost.py units RUN_DIR ROLES
      CPU per unit of work of one harness run: ROLES is "api:PID,worker:PID"
      (a role holds that process and its descendants); prints one line of
      name=value fields, in microseconds of CPU per unit

The units, from the harness's steps (bench/run.sh):
  api_us_per_submit     API CPU in the submit step / accepted submits
  worker_us_per_task    worker CPU in submit + drain / accepted submits
  e2e_us_per_task       API + worker CPU in the e2e step / tasks done
  api_us_per_item_req   API CPU in the items step / item requests answered
  services_us_per_task  RabbitMQ + Redis + MongoDB-wire + PostgreSQL CPU in
                        submit + drain / accepted submits, then each of them
                        alone (rabbitmq_us_per_task, ...)
  client_us_per_submit  k6's CPU in the submit step / accepted submits
  ceiling_share         submits sustained over submit + drain, as a share of
                        the machine's ceiling: NCPU cores / the CPU per task
                        of everything but the system (services and k6)
"""
import collections
import json
import os
import sys

HZ = os.sysconf("SC_CLK_TCK")
SERVICES = {"beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq", "redis-server": "redis",
            "redis-check-rdb": "redis",  # Debian's redis-server is a link to it
            "mongo-standin": "mongo-wire", "postgres": "postgres"}


def snapshot(path):
    rows = []
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            try:
                exe = os.path.basename(os.readlink(f"/proc/{name}/exe"))
            except OSError:
                # Another user's process, unless this runs as root: its
                # command name (at most 15 characters) instead.
                exe = stat[stat.index("(") + 1:stat.rindex(")")]
            exe = exe.replace(" ", "_") or "?"
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80].strip()
            rss = 0
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
        except OSError:
            continue
        # The fields after the command name: state is 0, ppid 1, utime 11, stime 12.
        fields = stat[stat.rindex(")") + 2:].split()
        rows.append(f"{name} {fields[1]} {exe} {int(fields[11]) + int(fields[12])} {rss} {cmd}")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def load(path):
    rows = {}
    with open(path) as f:
        for raw in f:
            p = raw.split(None, 5)
            if len(p) >= 5:
                rows[p[0]] = {"ppid": p[1], "exe": p[2], "ticks": int(p[3]), "rss": int(p[4]),
                              "cmd": p[5].strip() if len(p) > 5 else ""}
    return rows


def spent(before, after):
    """CPU seconds per pid between two snapshots (a pid reused by another program starts at 0)."""
    out = {}
    for pid, row in after.items():
        old = before.get(pid)
        out[pid] = (row["ticks"] - (old["ticks"] if old and old["exe"] == row["exe"] else 0)) / HZ
    return out


def programs(before_path, after_path, secs, client_ticks):
    before, after = load(before_path), load(after_path)
    cpu = collections.Counter()
    for pid, s in spent(before, after).items():
        cpu[after[pid]["exe"]] += s
    print(f"CPU during the run ({secs:.0f} s), by program (processes that exited during it are not counted):")
    for exe, s in cpu.most_common(8):
        if s > 0:
            print(f"  {exe:24s} {s:7.1f} s  {s / secs:5.2f} cores")
    c = client_ticks / HZ
    print(f"  {'harness and its k6 runs':24s} {c:7.1f} s  {c / secs:5.2f} cores  (exited; counted when waited for)")
    rss, procs = collections.Counter(), collections.Counter()
    for row in after.values():
        rss[row["exe"]] += row["rss"]
        procs[row["exe"]] += 1
    print("resident memory after the run, by program:")
    for exe, kib in rss.most_common(10):
        print(f"  {exe:24s} {kib / 1024:7.1f} MiB in {procs[exe]} process(es)")


def role_of(pid, rows, roots):
    """The role whose root process is pid or one of its ancestors, else None."""
    seen = set()
    while pid in rows and pid not in seen:
        if pid in roots:
            return roots[pid]
        seen.add(pid)
        pid = rows[pid]["ppid"]
    return roots.get(pid)


def k6_seconds(run_dir, step):
    """k6's CPU in a step, from its wrapper's `times`; None if it was not recorded."""
    try:
        with open(os.path.join(run_dir, f"{step}.k6times")) as f:
            # The second line is the children's user and system time: "0m1.234s 0m0.567s".
            total = 0.0
            for t in f.read().split("\n")[1].split():
                m, sec = t.rstrip("s").split("m")
                total += int(m) * 60 + float(sec)
            return total
    except (OSError, IndexError, ValueError):
        return None


def step_cpu(run_dir, first, last, roots):
    """CPU seconds by role and service from the start of step first to
    the end of step last, and k6's own over the steps between; None if a
    snapshot is missing."""
    b, a = os.path.join(run_dir, f"cpu-{first}-before.txt"), os.path.join(run_dir, f"cpu-{last}-after.txt")
    if not (os.path.exists(b) and os.path.exists(a)):
        return None
    before, after = load(b), load(a)
    cpu = collections.defaultdict(float)
    for pid, s in spent(before, after).items():
        role = role_of(pid, after, roots)
        if role:
            cpu[role] += s
        elif after[pid]["exe"] in SERVICES:
            cpu["services"] += s
            cpu[SERVICES[after[pid]["exe"]]] += s
    steps = [first] if first == last else [first, last]
    k6 = [k6_seconds(run_dir, step) for step in steps]
    cpu["client"] = None if None in k6 else sum(k6)
    return cpu


def summary(run_dir, step):
    try:
        with open(os.path.join(run_dir, f"{step}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def units(run_dir, roles):
    roots = {}
    for part in roles.split(","):
        role, pid = part.split(":")
        roots[pid] = role
    submit, drain, items, e2e = (summary(run_dir, s) for s in ("submit", "drain", "items", "e2e"))
    cs, ci, ce = (step_cpu(run_dir, s, s, roots) for s in ("submit", "items", "e2e"))
    # The tasks submitted run during the submit step and the drain after it.
    both = step_cpu(run_dir, "submit", "drain", roots)
    out = []

    def pick(cpu, key):
        return None if cpu is None else cpu.get(key, 0.0)

    def per(name, seconds, count):
        out.append(f"{name}={seconds / count * 1e6:.0f}" if seconds is not None and count else f"{name}=NA")

    accepted = submit.get("ok") or 0
    per("api_us_per_submit", pick(cs, "api"), accepted)
    per("worker_us_per_task", pick(both, "worker"), accepted)
    per("e2e_us_per_task", None if ce is None else ce.get("api", 0.0) + ce.get("worker", 0.0), e2e.get("success"))
    per("api_us_per_item_req", pick(ci, "api"), items.get("ok_requests"))
    per("services_us_per_task", pick(both, "services"), accepted)
    for service in ("rabbitmq", "redis", "mongo-wire", "postgres"):
        per(f"{service.replace('-', '_')}_us_per_task", pick(both, service), accepted)
    per("client_us_per_submit", pick(cs, "client"), accepted)
    wall = (submit.get("wall_s") or 0) + (drain.get("drain_s") or 0)
    client = pick(both, "client")
    if both is not None and client is not None and accepted and wall:
        others = (both.get("services", 0.0) + client) / accepted
        out.append(f"ceiling_share={accepted / wall * others / os.cpu_count():.2f}")
    else:
        out.append("ceiling_share=NA")
    print(" ".join(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "snapshot":
        snapshot(args[0])
    elif cmd == "hook":
        snapshot(os.path.join(args[2], f"cpu-{args[1]}-{args[0]}.txt"))
    elif cmd == "programs":
        programs(args[0], args[1], float(args[2]), int(args[3]))
    elif cmd == "units":
        units(args[0], args[1])
    else:
        sys.exit(f"unknown command {cmd!r}; see the docstring")
