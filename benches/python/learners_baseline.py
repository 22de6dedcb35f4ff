#!/usr/bin/env python3
"""Python baseline for the learners graph load: the straightforward design done right.

Official `neo4j` driver (pip install neo4j), same CSV and graph model as examples/learners_graph.rs:
constraints first, distinct shared entities, then learners, then relationships; every UNWIND batch of
`--batch-size` rows (default 5000) is one managed write transaction (`session.execute_write`, which
retries transient errors), run on a pool of `--workers` threads (default 8), rows as maps.

    python3 benches/python/learners_baseline.py --input /tmp/learners.csv \
        --bolt-uri bolt://127.0.0.1:7687 --user root --password PW --database DB

Prints one line:
    baseline learners=N nodes_created=n rels_created=r elapsed_s=S learners_per_s=R cpu_share=C retries=T
(cpu_share = this process's CPU time / wall time; retries = transaction function re-invocations).
"""

import argparse
import csv
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from neo4j import GraphDatabase

HEADER = ["learner_id", "full_name", "gender", "city", "country", "skills", "employment", "enrollments",
          "learning_state", "professional_status", "snapshot_date"]


def opt(v):
    return v if v else None


def read(path):
    t = {k: [] for k in ["learners", "has_skill", "works_for", "enrolled_in", "lives_in", "in_country",
                         "state", "status"]}
    shared = {k: {} for k in ["Skill", "Company", "Program", "Country", "City", "LearningState",
                              "ProfessionalStatus"]}
    seen = {}
    links = set()
    with open(path, newline="", encoding="utf-8") as f:
        rd = csv.reader(f)
        header = next(rd)
        if [h.lstrip("\ufeff") for h in header] != HEADER:
            sys.exit(f"{path}:1: bad header {header}")
        for rec in rd:
            lid = rec[0]
            if lid in seen:
                continue
            seen[lid] = True
            snap = rec[10]
            t["learners"].append({"id": lid, "full_name": opt(rec[1]), "gender": opt(rec[2]), "snapshot_date": snap})
            skills = []
            for s in rec[5].split(";"):
                s = s.strip()
                if s and s not in skills:
                    skills.append(s)
                    shared["Skill"][s] = {"name": s}
                    t["has_skill"].append({"a": lid, "b": s})
            if rec[6].strip():
                keys = set()
                for j in json.loads(rec[6]):
                    k = (j["company"], j["start_date"])
                    if k in keys:
                        continue
                    keys.add(k)
                    shared["Company"][j["company"]] = {"name": j["company"]}
                    t["works_for"].append({"a": lid, "b": j["company"], "start_date": j["start_date"],
                                           "title": opt(j.get("title")), "end_date": j.get("end_date"),
                                           "is_current": j.get("end_date") is None})
            if rec[7].strip():
                keys = set()
                for e in json.loads(rec[7]):
                    k = (e["program"], e["start_date"])
                    if k in keys:
                        continue
                    keys.add(k)
                    shared["Program"][e["program"]] = {"name": e["program"]}
                    t["enrolled_in"].append({"a": lid, "b": e["program"], "start_date": e["start_date"],
                                             "end_date": e.get("end_date"),
                                             "graduation_date": e.get("graduation_date")})
            city, country = rec[3], rec[4]
            if country:
                shared["Country"][country] = {"name": country}
            if city:
                cid = f"{city}|{country}"
                shared["City"][cid] = {"id": cid, "name": city}
                t["lives_in"].append({"a": lid, "b": cid})
                if country and cid not in links:
                    links.add(cid)
                    t["in_country"].append({"a": cid, "b": country})
            if rec[8]:
                shared["LearningState"][rec[8]] = {"name": rec[8]}
                t["state"].append({"a": lid, "b": rec[8], "validFrom": snap})
            if rec[9]:
                shared["ProfessionalStatus"][rec[9]] = {"name": rec[9]}
                t["status"].append({"a": lid, "b": rec[9], "validFrom": snap})
    return len(seen), t, shared


KEYS = {"Skill": "name", "Company": "name", "Program": "name", "Country": "name", "City": "id",
        "LearningState": "name", "ProfessionalStatus": "name", "Learner": "id"}

REL_QUERIES = {
    "has_skill": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:Skill {name: r.b}) MERGE (a)-[:HAS_SKILL]->(b)",
    "works_for": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:Company {name: r.b}) "
                 "MERGE (a)-[x:WORKS_FOR {start_date: r.start_date}]->(b) "
                 "SET x.title = r.title, x.end_date = r.end_date, x.is_current = r.is_current",
    "enrolled_in": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:Program {name: r.b}) "
                   "MERGE (a)-[x:ENROLLED_IN {start_date: r.start_date}]->(b) "
                   "SET x.end_date = r.end_date, x.graduation_date = r.graduation_date",
    "lives_in": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:City {id: r.b}) MERGE (a)-[:LIVES_IN]->(b)",
    "in_country": "UNWIND $rows AS r MATCH (a:City {id: r.a}) MATCH (b:Country {name: r.b}) MERGE (a)-[:IN_COUNTRY]->(b)",
    "state": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:LearningState {name: r.b}) "
             "MERGE (a)-[x:HAS_LEARNING_STATE]->(b) SET x.validFrom = r.validFrom, x.isCurrent = true",
    "status": "UNWIND $rows AS r MATCH (a:Learner {id: r.a}) MATCH (b:ProfessionalStatus {name: r.b}) "
              "MERGE (a)-[x:HAS_PROFESSIONAL_STATUS]->(b) SET x.validFrom = r.validFrom, x.isCurrent = true",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--bolt-uri", required=True)
    ap.add_argument("--user", default="neo4j")
    ap.add_argument("--password", default="")
    ap.add_argument("--database", default="neo4j")
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--max-retry-time", type=float, default=30.0,
                    help="driver max_transaction_retry_time in seconds (driver default: 30)")
    a = ap.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    learners, t, shared = read(a.input)
    print(f"read {learners} learners in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    driver = GraphDatabase.driver(a.bolt_uri, auth=(a.user, a.password), max_connection_pool_size=a.workers + 2,
                                  max_transaction_retry_time=a.max_retry_time)
    lock = threading.Lock()
    totals = {"nodes": 0, "rels": 0, "calls": 0, "batches": 0}

    def write(query, rows):
        def work(tx):
            with lock:
                totals["calls"] += 1
            return tx.run(query, rows=rows).consume().counters

        with driver.session(database=a.database) as s:
            c = s.execute_write(work)
        with lock:
            totals["nodes"] += c.nodes_created
            totals["rels"] += c.relationships_created
            totals["batches"] += 1

    def parallel(query, rows):
        with ThreadPoolExecutor(max_workers=a.workers) as pool:
            futs = [pool.submit(write, query, rows[i:i + a.batch_size]) for i in range(0, len(rows), a.batch_size)]
            for f in futs:
                f.result()

    try:
        load(a, driver, t, shared, parallel)
    except Exception as e:  # report how far it got, then fail
        print(f"baseline FAILED elapsed_s={time.perf_counter() - t0:.2f} nodes_created={totals['nodes']} "
              f"rels_created={totals['rels']} retries={totals['calls'] - totals['batches']} "
              f"error={type(e).__name__}: {str(e)[:200]!r}")
        sys.exit(1)
    driver.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"baseline learners={learners} nodes_created={totals['nodes']} rels_created={totals['rels']} "
          f"elapsed_s={wall:.2f} learners_per_s={learners / wall:.0f} cpu_share={cpu / wall:.2f} "
          f"retries={totals['calls'] - totals['batches']}")


def load(a, driver, t, shared, parallel):
    with driver.session(database=a.database) as s:
        for label, key in KEYS.items():
            s.run(f"CREATE CONSTRAINT baseline_{label}_{key} IF NOT EXISTS FOR (n:{label}) REQUIRE n.{key} IS UNIQUE").consume()
    for label, rows in shared.items():
        key = KEYS[label]
        sets = "".join(f" SET n.{p} = r.{p}" for p in ["name"] if label == "City")
        parallel(f"UNWIND $rows AS r MERGE (n:{label} {{{key}: r.{key}}}){sets}", list(rows.values()))
    parallel("UNWIND $rows AS r MERGE (n:Learner {id: r.id}) "
             "SET n.full_name = r.full_name, n.gender = r.gender, n.snapshot_date = r.snapshot_date", t["learners"])
    for name, q in REL_QUERIES.items():
        parallel(q, t[name])


if __name__ == "__main__":
    main()
