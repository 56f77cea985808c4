"""The change log: for every field a write-back changed, the record, the
field, the field-map rule and source, the provider the value came from,
when, the job, and what the field held before (`blank`, `ours` or
`overwritten`). Never the value itself, so an entry may be kept for
CHANGE_LOG_DAYS (90 by default) without keeping personal or provider data.

Two bounded copies of each entry: a stream per UTC day (capped, for the
CSV export of a period) and a short list per record, newest first (for
the record's view). A job's write is logged once: the flush that confirms
it may be replayed (a worker died before it let go of the batch), and the
marker key makes the second time a no-op.
"""
from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import redis

from crm_enrich import keys

DEFAULT_DAYS = 90
DEFAULT_MAX_PER_DAY = 200_000
DEFAULT_PER_RECORD = 100
CSV_COLUMNS = ("at", "object", "record_id", "field", "rule", "source", "provider", "was", "job_id")

# KEYS: the job's marker, the day's stream, the record's list.
# ARGV: marker TTL, stream cap, TTL of both copies, record cap, entries...
_LOG = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i])
  redis.call('LPUSH', KEYS[3], ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return #ARGV - 4
"""


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(frozen=True)
class ChangeLog:
    r: redis.Redis
    days: int = DEFAULT_DAYS
    max_per_day: int = DEFAULT_MAX_PER_DAY
    per_record: int = DEFAULT_PER_RECORD

    def record_write(self, job_id: str, object_type: str, record_id: str, why: dict[str, dict],
                     at: float | None = None) -> int:
        """Log the fields one job's write changed (`why`: field -> rule,
        source, provider, was). Answers how many entries were added (0 when
        this job's write was logged before)."""
        at = round(at or time.time(), 3)
        entries = [json.dumps({"at": at, "object": object_type, "record_id": record_id, "field": name,
                               "rule": reason.get("rule"), "source": reason.get("source"),
                               "provider": reason.get("provider"), "was": reason.get("was"),
                               "job_id": job_id}, sort_keys=True)
                   for name, reason in sorted(why.items())]
        if not entries:
            return 0
        ttl = self.days * 86_400 + 86_400  # a day's stream lives as long as its last entry needs
        return int(self.r.eval(_LOG, 3, keys.changes_logged(job_id), keys.changes_of_day(day_of(at)),
                               keys.changes_of_record(object_type, record_id),
                               keys.JOB_META_TTL_S, self.max_per_day, ttl, self.per_record, *entries))

    def of_record(self, object_type: str, record_id: str, limit: int | None = None) -> list[dict]:
        """The record's latest changes, newest first, within the kept period."""
        raw = self.r.lrange(keys.changes_of_record(object_type, record_id), 0, (limit or self.per_record) - 1)
        oldest = time.time() - self.days * 86_400
        return [entry for entry in map(json.loads, raw) if entry["at"] >= oldest]

    def between(self, since: float, until: float | None = None, page: int = 1000) -> Iterator[dict]:
        """Every change from `since` to `until` (default now), oldest first,
        read a page at a time from each day's stream."""
        until = until or time.time()
        since = max(since, time.time() - self.days * 86_400)
        day = datetime.fromtimestamp(since, UTC).date()
        while day <= datetime.fromtimestamp(until, UTC).date():
            key = keys.changes_of_day(day.isoformat())
            # Stream ids are Redis's clock, `at` ours: a minute's slack each side.
            start, end = str(max(0, int(since * 1000) - 60_000)), str(int(until * 1000) + 60_000)
            while True:
                # decode_responses: ids and fields are str.
                rows = cast(list[tuple[str, dict[str, str]]], self.r.xrange(key, min=start, max=end, count=page))
                for _id, fields in rows:
                    entry = json.loads(fields["e"])
                    if since <= entry["at"] <= until:
                        yield entry
                if len(rows) < page:
                    break
                start = "(" + rows[-1][0]
            day += timedelta(days=1)


def as_csv(entries: Iterable[dict]) -> Iterator[str]:
    """The export: a header, then one line per change (times in UTC, ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    for entry in entries:
        out.seek(0)
        out.truncate()
        writer.writerow([iso(entry["at"]) if name == "at" else entry.get(name) or "" for name in CSV_COLUMNS])
        yield out.getvalue()


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 date or date-time (UTC unless it says otherwise) as epoch
    seconds; None when it is not one."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
