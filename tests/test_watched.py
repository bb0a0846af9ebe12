"""What the operator's watches saw (watched.py) against what a list or a GET says: the newer wins.

A study's daemon lists its Jobs from the API server at each safety poll. A Job that finishes
while that list is on its way shows on the watch (and wakes the daemon) before the list, which
still says it runs, arrives: the list must not put it back to running, or the study waits for
the next safety poll (a minute) to see its result."""

from __future__ import annotations

from boss_operator.watched import Watched

KEY = ("ns", "st")


def job(name: str, rv: int, done: bool = False) -> dict:
    status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]} if done else {"active": 1}
    return {"metadata": {"name": name, "resourceVersion": str(rv)}, "status": status}


def test_a_job_that_finished_while_the_list_was_on_its_way_stays_finished():
    w = Watched()
    w.put_job(KEY, "st-t0001", job("st-t0001", 10))
    listed = {"st-t0001": job("st-t0001", 10)}  # the list, taken at 11...
    w.put_job(KEY, "st-t0001", job("st-t0001", 12, done=True))  # ...the watch: finished at 12
    w.replace_jobs(KEY, listed, "11")  # ...the list arrives
    assert w.jobs(KEY)["st-t0001"]["status"]["succeeded"] == 1


def test_a_list_newer_than_the_watch_wins():
    w = Watched()
    w.put_job(KEY, "st-t0001", job("st-t0001", 10))
    w.replace_jobs(KEY, {"st-t0001": job("st-t0001", 15, done=True)}, "16")
    assert w.jobs(KEY)["st-t0001"]["metadata"]["resourceVersion"] == "15"
    w.put_job(KEY, "st-t0001", job("st-t0001", 10))  # a late, older event changes nothing
    assert w.jobs(KEY)["st-t0001"]["metadata"]["resourceVersion"] == "15"


def test_jobs_created_or_deleted_after_the_list_are_as_the_watch_saw_them():
    w = Watched()
    w.put_job(KEY, "old", job("old", 5))
    w.put_job(KEY, "gone-before", job("gone-before", 6))
    listed = {"old": job("old", 5), "deleted-since": job("deleted-since", 7)}  # taken at 20
    w.put_job(KEY, "new", job("new", 21))  # created after the list
    w.put_job(KEY, "mine", {"metadata": {"name": "mine"}})  # our own create, not on the watch yet
    w.put_job(KEY, "deleted-since", None, deleted_rv="22")  # deleted after the list
    w.replace_jobs(KEY, listed, "20")
    assert sorted(w.jobs(KEY)) == ["mine", "new", "old"]  # "gone-before" was deleted before the list
    # a Job this operator deleted (no resourceVersion known) is not brought back by an older list
    w.put_job(KEY, "old", None)
    w.replace_jobs(KEY, {"old": job("old", 5)}, "23")
    assert "old" not in w.jobs(KEY)
    w.replace_jobs(KEY, {"new": job("new", 21)}, "30")  # caught up: the tombstone goes, "old" stays gone
    assert sorted(w.jobs(KEY)) == ["mine", "new"] and not w._gone[KEY]


def test_a_get_older_than_the_watch_does_not_undo_an_edit():
    w = Watched()
    w.put_study(KEY, {"metadata": {"resourceVersion": "40"}, "spec": {"suspend": True}})
    w.put_study(KEY, {"metadata": {"resourceVersion": "39"}, "spec": {"suspend": False}})
    assert w.study(KEY)["spec"]["suspend"] is True
