import stat

from conceptengine.review.queue import ReviewQueue


def test_the_queue_database_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "run" / "review.db"
    queue = ReviewQueue(str(path))
    queue.open_count(1, ["mv"])  # touches the database, so SQLite writes its -wal / -shm files too
    for f in [path, *path.parent.glob("review.db-*")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
