"""Fail CI unless real-database tests ran on both PostgreSQL and MariaDB and none was skipped."""

import sys
import xml.etree.ElementTree as ET

cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
real = [case for case in cases if ".real_db." in case.get("classname", "") + "."]
skipped = [case.get("name") for case in real if case.find("skipped") is not None]
by_backend = {backend: sum(f"[{backend}" in (case.get("name") or "") for case in real)
              for backend in ("postgresql", "mariadb")}
print(f"real-database tests: {len(real)} ran, {len(skipped)} skipped; per backend: {by_backend}")
if not real or skipped or not all(by_backend.values()):
    sys.exit(f"real-database tests must run, not skip: skipped={skipped} per_backend={by_backend}")
