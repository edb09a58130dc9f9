"""python-hcl2 is not thread-safe; ``hcl_eval.load`` serialises it.

The validations in test_terraform_static read ``.tf`` files from a thread
pool. Unserialised, four threads parsing at once returned wrong trees (a
provider spec parsed as a string) about one time in two.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.terraform.conftest import TERRAFORM_DIR
from tests.terraform.hcl_eval import load


def test_parsing_from_many_threads_gives_the_serial_result() -> None:
    files = sorted(TERRAFORM_DIR.rglob("*.tf"))
    expected = [load(path) for path in files]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            assert list(pool.map(load, files)) == expected
