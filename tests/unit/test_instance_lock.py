"""The instance lock beside the database: a pid file that cannot be written (a full or read-only disk) is one line
naming it, exit 3, and the lock is let go."""

from __future__ import annotations

import pytest

from catalyst.errors import DatabaseError
from catalyst.instance import InstanceLock


def test_a_pid_file_that_cannot_be_written_is_a_database_error_and_the_lock_is_released(tmp_path):
    database = tmp_path / "catalyst.db"
    (tmp_path / "catalyst.db.pid").mkdir()  # stands in for a disk that refuses the write (EISDIR, as ENOSPC would)
    with pytest.raises(DatabaseError) as refused:
        InstanceLock(database).acquire("daemon")
    assert str(refused.value) == (f"{tmp_path / 'catalyst.db.pid'}: cannot write the pid file: Is a directory; free "
                                  "disk space or repair the disk, then start again")
    assert refused.value.exit_code == 3
    (tmp_path / "catalyst.db.pid").rmdir()
    again = InstanceLock(database).acquire("daemon")  # the lock was let go
    again.release()
