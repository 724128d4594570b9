"""The file follower with real files: rotation, truncation, restart, batching."""

from __future__ import annotations

from pathlib import Path

from auditfed.sources import Collector


def append(path, *lines, end=b"\n"):
    with path.open("ab") as fh:
        fh.write(b"\n".join(lines) + end)


def drain(collector):
    """Poll until dry, committing as a successful sender would; all records in order."""
    out = []
    while True:
        batches = collector.poll()
        if not batches:
            return out
        for _path, records in batches:
            out += records
        collector.commit()


def test_follow_and_partial_lines(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"one", b"two")
    append(log, b"thr", end=b"")
    with Collector([log], tmp_path / "state.json") as c:
        assert drain(c) == [b"one", b"two"]
        append(log, b"ee", b"four")
        assert drain(c) == [b"three", b"four"]
        assert drain(c) == []


def test_poll_without_commit_repeats_and_restart_neither_loses_nor_repeats(tmp_path):
    log = tmp_path / "app.log"
    state = tmp_path / "state.json"
    append(log, b"a", b"b")
    c = Collector([log], state)
    assert c.poll() == [(str(log), [b"a", b"b"])]
    assert c.poll() == [(str(log), [b"a", b"b"])]  # the send failed: same lines again
    c.commit()
    append(log, b"c")
    assert c.poll() == [(str(log), [b"c"])]  # polled, but crashed before sending
    c.close()
    c = Collector([log], state)  # restart
    append(log, b"d")
    assert drain(c) == [b"c", b"d"]
    c.close()
    c = Collector([log], state)
    assert drain(c) == []
    c.close()


def test_a_batch_keeps_its_name_across_a_restart_until_committed(tmp_path):
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    append(log, b"a", b"b")
    c = Collector([log], state)
    c.poll()
    name = c.batch_id(log)
    assert c.batch_id(log) == name
    c.close()  # crashed after sending, before committing
    c = Collector([log], state)
    assert c.poll() == [(str(log), [b"a", b"b"])]
    assert c.batch_id(log) == name
    c.commit()
    append(log, b"c")
    c.poll()
    assert c.batch_id(log) != name  # the next batch
    c.close()


def test_rotation_by_rename_while_running(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"1", b"2")
    with Collector([log], tmp_path / "state.json") as c:
        assert drain(c) == [b"1", b"2"]
        append(log, b"3")  # written just before rotation, not yet read
        log.rename(tmp_path / "app.log.1")
        append(log, b"4", b"5")  # the new file
        assert drain(c) == [b"3", b"4", b"5"]
        append(log, b"6")
        assert drain(c) == [b"6"]


def test_rotation_while_stopped_finds_the_old_file_by_inode(tmp_path):
    log = tmp_path / "app.log"
    state = tmp_path / "state.json"
    append(log, b"1")
    with Collector([log], state) as c:
        assert drain(c) == [b"1"]
    append(log, b"2", b"3")
    log.rename(tmp_path / "app.log.1")
    append(log, b"4")
    with Collector([log], state) as c:
        assert drain(c) == [b"2", b"3", b"4"]


def test_truncation(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"first line", b"second line")
    with Collector([log], tmp_path / "state.json") as c:
        assert drain(c) == [b"first line", b"second line"]
        with log.open("r+b") as fh:  # copytruncate
            fh.truncate(0)
        append(log, b"x")
        assert drain(c) == [b"x"]
        # truncated and regrown past the old offset: the fingerprint tells
        with log.open("r+b") as fh:
            fh.truncate(0)
        append(log, b"y" * 40, b"z")
        assert drain(c) == [b"y" * 40, b"z"]


def test_batches_and_several_paths(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    append(a, *[str(i).encode() for i in range(25)])
    append(b, b"only")
    with Collector([a, b], tmp_path / "state.json", max_lines=10) as c:
        batches = c.poll()
        assert [(Path(p).name, len(r)) for p, r in batches] == [("a.log", 10),
                                                                         ("b.log", 1)]
        c.commit([str(b)])  # only b's send succeeded
        batches = c.poll()
        assert [(Path(p).name, r[0]) for p, r in batches] == [("a.log", b"0")]
        c.commit()
        assert len(drain(c)) == 15


def test_continuation_lines_join_their_record(tmp_path):
    log = tmp_path / "postgresql.log"
    append(log, b"2026 LOG:  AUDIT: SESSION,1,1,WRITE,UPDATE,,,\"UPDATE t", b"\t SET a = 1\",<none>",
           b"2026 LOG:  next")
    with Collector([log], tmp_path / "state.json", continuation=b"\t", linger=0.0) as c:
        records = drain(c)
    assert records == [b"2026 LOG:  AUDIT: SESSION,1,1,WRITE,UPDATE,,,\"UPDATE t\n\t SET a = 1\",<none>",
                       b"2026 LOG:  next"]


def test_start_at_end_and_missing_file(tmp_path):
    log = tmp_path / "app.log"
    with Collector([log], tmp_path / "state.json", start_at="end") as c:
        assert c.poll() == []  # no file yet
        append(log, b"new")
        assert drain(c) == [b"new"]
    old = tmp_path / "old.log"
    append(old, b"history")
    with Collector([old], tmp_path / "state2.json", start_at="end") as c:
        assert drain(c) == []
        append(old, b"fresh")
        assert drain(c) == [b"fresh"]
