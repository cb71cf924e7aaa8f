"""The bundle cache on a real S3 API (moto server on 127.0.0.1, through s3fs): a second, unchanged run takes
every cell from it, each verified; entries are committed key files pointing at complete objects."""

from __future__ import annotations

import json

from zoohelpers import make_zoo
from s3server import moto_s3


def test_s3_cache_second_run_is_all_hits(tmp_path, cli):
    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0})
    with moto_s3() as (url, fs):
        r = cli("zoo", "build", zoo_file, "--cache", url, "--out", tmp_path / "out1")
        assert r.exit_code == 0, r.output
        root = url.removeprefix("s3://")
        keys = fs.glob(f"{root}/keys/*.json")
        assert len(keys) == 1
        for k in keys:  # every committed key points at an uploaded bundle
            obj = json.loads(fs.cat_file(k))["object"]
            assert fs.exists(f"{root}/{obj}/fast-ort/manifest.json")
        r = cli("zoo", "build", zoo_file, "--cache", url, "--out", tmp_path / "out2")
        assert r.exit_code == 0, r.output
        recs = [json.loads(p.read_text()) for p in (tmp_path / "out2" / "cells").glob("*/*.json")]
        assert [x["cache"] for x in recs] == ["hit"]
        assert cli("verify", tmp_path / "out2" / "alpha" / "fast-ort").exit_code == 0
