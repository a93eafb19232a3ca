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
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            exe = os.path.basename(os.readlink(f"/proc/{name}/exe")).replace(" ", "_")
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


def step_cpu(run_dir, step, roots):
    """CPU seconds by role and service in one step, and k6's own (from its wrapper's times)."""
    b, a = os.path.join(run_dir, f"cpu-{step}-before.txt"), os.path.join(run_dir, f"cpu-{step}-after.txt")
    if not (os.path.exists(b) and os.path.exists(a)):
        return None
    before, after = load(b), load(a)
    cpu = collections.Counter()
    for pid, s in spent(before, after).items():
        role = role_of(pid, after, roots)
        if role:
            cpu[role] += s
        elif after[pid]["exe"] in SERVICES:
            cpu["services"] += s
            cpu[SERVICES[after[pid]["exe"]]] += s
    try:
        with open(os.path.join(run_dir, f"{step}.k6times")) as f:
            # bash's `times`, second line: the children's user and system time, "0m1.234s 0m0.567s"
            for t in f.read().split("\n")[1].split():
                m, s = t.rstrip("s").split("m")
                cpu["client"] += int(m) * 60 + float(s)
    except (OSError, IndexError, ValueError):
        pass
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
    cs, cd, ci, ce = (step_cpu(run_dir, s, roots) for s in ("submit", "drain", "items", "e2e"))
    out = []

    def per(name, seconds, count):
        out.append(f"{name}={seconds / count * 1e6:.0f}" if seconds is not None and count else f"{name}=NA")

    accepted = submit.get("ok") or 0
    both = (cs or collections.Counter()) + (cd or collections.Counter()) if cs and cd else None
    per("api_us_per_submit", cs and cs["api"], accepted)
    per("worker_us_per_task", both and both["worker"], accepted)
    per("e2e_us_per_task", ce and ce["api"] + ce["worker"], e2e.get("success"))
    per("api_us_per_item_req", ci and ci["api"], items.get("ok_requests"))
    per("services_us_per_task", both and both["services"], accepted)
    for service in ("rabbitmq", "redis", "mongo-wire", "postgres"):
        per(f"{service.replace('-', '_')}_us_per_task", both and both[service], accepted)
    per("client_us_per_submit", cs and cs["client"], accepted)
    wall = (submit.get("wall_s") or 0) + (drain.get("drain_s") or 0)
    if both and accepted and wall:
        others = (both["services"] + both["client"]) / accepted
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
