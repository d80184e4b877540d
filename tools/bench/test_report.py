# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Tests of tools/bench/report.py: number formats, the markdown section, the splicing between markers, the PNG."""

import json

import pytest

import report

RESULTS = {
    "meta": {"date": "2026-12-01T14:00:00Z", "mode": "full", "repetitions": 5, "host": "fleet-lab-1",
             "docker": "26.1.5", "containerd": "1.7.24", "criu": "4.1.1", "podman": "5.4.2", "kernel": "6.1.0-28",
             "cpus": 2, "command": "make bench"},
    "measurements": [
        {"id": "dump.criu.1024", "group": "dump", "what": "raw criu dump", "size_mib": 1024, "containers": 1,
         "samples": [0.81, 0.84, 0.8], "median": 0.81, "min": 0.8, "max": 0.84},
        {"id": "restore.docker.256", "group": "restore", "what": "docker start --checkpoint", "size_mib": 256,
         "containers": 1, "samples": [1.2, 1.31, 1.25], "median": 1.25, "min": 1.2, "max": 1.31},
        {"id": "dump.criu.256", "group": "dump", "what": "raw criu dump", "size_mib": 256, "containers": 1,
         "samples": [0.21, 0.22, 0.2], "median": 0.21, "min": 0.2, "max": 0.22},
        {"id": "dump.docker.256", "group": "dump", "what": "docker checkpoint create", "size_mib": 256,
         "containers": 1, "samples": [4.2, 4.31, 4.4], "median": 4.31, "min": 4.2, "max": 4.4},
        {"id": "restore.criu.256", "group": "restore", "what": "raw criu restore", "size_mib": 256, "containers": 1,
         "samples": [0.5, 0.52, 0.49], "median": 0.5, "min": 0.49, "max": 0.52, "bytes": 268435456},
    ],
    "ratios": [
        {"id": "criu_vs_docker_dump_256", "what": "criu dump vs docker checkpoint create (256 MiB)",
         "numerator": "dump.criu.256", "denominator": "dump.docker.256", "value": 0.0523, "target": "<= 0.1",
         "met": True, "note": "raw criu"},
        {"id": "restore", "what": "restore vs dump", "value": 2.5, "target": "<= 2", "met": False},
    ],
    "splits": {
        "fleet": {"what": "host_reboot.yml, 3 hosts x 4 containers", "total": 95.0,
                  "parts": {"checkpoint": 6.0, "reboot": 40.0, "restore": 12.0, "overhead": 37.0}},
        "migrate": {"what": "migrate.yml downtime, 256 MiB", "total": 6.0,
                    "parts": {"dump": 0.4, "transfer": 1.5, "restore": 3.0, "overhead": 1.1}},
    },
}


def write_results(tmp_path, results=None):
    """The results written to a JSON file in tmp_path; its path."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS if results is None else results), encoding="utf-8")
    return path


@pytest.mark.parametrize("value, text", [
    (0.2134, "0.213"), (4.312, "4.31"), (95.24, "95.2"), (0.2, "0.200"), (0.01234, "0.0123"), (9.996, "10.0"),
    (123.4, "123"), (1234.5, "1234"), (0, "0"), (None, "\u2013"),
])
def test_fmt_seconds(value, text):
    assert report.fmt_seconds(value) == text


@pytest.mark.parametrize("value, text", [
    (0.052, "0.052x"), (0.05, "0.05x"), (0.05234, "0.0523x"), (12.5, "12.5x"), (2.0, "2x"), (150, "150x"),
])
def test_fmt_ratio(value, text):
    assert report.fmt_ratio(value) == text


def test_markdown_has_every_part():
    text = report.render_markdown(RESULTS, "performance.png")
    assert text.startswith("Run 2026-12-01T14:00:00Z \u00b7 mode **full** \u00b7 5 repetitions")
    for bit in ("docker 26.1.5", "criu 4.1.1", "podman 5.4.2", "host fleet-lab-1", "2 CPUs", "`make bench`"):
        assert bit in text
    assert "| criu dump vs docker checkpoint create (256 MiB) | 0.0523x | <= 0.1 | \u2705 | raw criu |" in text
    assert "| restore vs dump | 2.5x | <= 2 | \u274c |  |" in text
    assert "| raw criu dump | 256 | 1 | 0.210 | 0.200\u20130.220 | 3 |" in text
    assert "| checkpoint | 6.00 | 6.3 |" in text
    assert "| **total** | **95.0** | 100.0 |" in text
    assert "### fleet: host_reboot.yml, 3 hosts x 4 containers" in text
    assert text.rstrip().endswith("![benchmark](performance.png)")


def test_measurements_grouped_and_sizes_ordered():
    text = report.render_markdown(RESULTS)
    expected = ("## Targets", "## Measurements", "### dump", "| raw criu dump | 256",
                "| docker checkpoint create | 256", "| raw criu dump | 1024", "### restore", "## Splits", "### fleet",
                "### migrate")
    order = [text.index(s) for s in expected]
    assert order == sorted(order)
    assert "![benchmark]" not in text


def test_missing_optional_keys():
    results = {"measurements": [{"id": "many.module.256", "group": "many", "median": 3.14159},
                                {"id": "odd", "median": 0.5, "samples": [0.5]}]}
    text = report.render_markdown(results)
    assert text.startswith("No run metadata.")
    assert "## Targets" not in text and "## Splits" not in text
    assert "| many.module.256 | \u2013 | \u2013 | 3.14 | \u2013 | \u2013 |" in text
    assert "### other" in text and "| odd | \u2013 | \u2013 | 0.500 | 0.500\u20130.500 | 1 |" in text
    assert report.render_markdown({}) == "No run metadata.\n"


def test_splice_keeps_outside_text(tmp_path):
    doc = tmp_path / "performance.md"
    before = "# Performance\n\nHand-written intro.\n\n"
    after = "\n\n## Notes\n\nHand-written notes.\n"
    doc.write_text(f"{before}{report.BEGIN}\nold figures\n{report.END}{after}", encoding="utf-8")
    assert report.main([str(write_results(tmp_path)), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"{before}{report.BEGIN}\n") and text.endswith(f"{report.END}{after}")
    assert "old figures" not in text and "## Targets" in text
    assert report.main([str(write_results(tmp_path)), "--doc", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == text  # a second run changes nothing


def test_creates_file_when_missing(tmp_path):
    doc = tmp_path / "docs" / "performance.md"
    assert report.main([str(write_results(tmp_path, {"measurements": []})), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text == f"{report.HEADER}\n{report.BEGIN}\nNo run metadata.\n{report.END}\n"


def test_markers_appended_when_absent_and_refused_when_broken():
    assert report.splice("# Mine\n", "new\n") == f"# Mine\n\n{report.BEGIN}\nnew\n{report.END}\n"
    for broken in (f"x {report.BEGIN} y", f"{report.END} {report.BEGIN}", f"{report.BEGIN}{report.END}{report.END}"):
        with pytest.raises(ValueError):
            report.splice(broken, "new\n")


def test_prints_without_doc(tmp_path, capsys):
    assert report.main([str(write_results(tmp_path))]) == 0
    assert capsys.readouterr().out == report.render_markdown(RESULTS)


def test_png_written_and_referenced(tmp_path):
    pytest.importorskip("matplotlib")
    doc, png = tmp_path / "docs" / "performance.md", tmp_path / "docs" / "img" / "performance.png"
    assert report.main([str(write_results(tmp_path)), "--doc", str(doc), "--png", str(png)]) == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10000
    assert "![benchmark](img/performance.png)" in doc.read_text(encoding="utf-8")
    report.plot(RESULTS, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == data  # deterministic: no timestamp in the metadata


def test_png_with_splits_only_or_nothing(tmp_path):
    pytest.importorskip("matplotlib")
    report.plot({"splits": RESULTS["splits"]}, tmp_path / "splits.png")
    report.plot({}, tmp_path / "empty.png")
    assert (tmp_path / "splits.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_a_merged_run_says_which_figures_are_from_when():
    line = report.meta_line({"date": "2026-12-01T18:00:00Z", "mode": "full",
                             "merged": {"cases": ["migrate"], "earlier_date": "2026-12-01T14:47:48Z"}})
    assert line.startswith("Run 2026-12-01T18:00:00Z")
    assert "Only the cases migrate ran then" in line and "from the run of 2026-12-01T14:47:48Z" in line
    assert "merged" not in report.meta_line({"date": "x"}).lower()
    twice = report.meta_line({"date": "2026-12-03T03:35:43Z", "merged": {
        "cases": ["migrate-disk"], "earlier_date": "2026-12-02T03:54:50Z",
        "between": [{"cases": ["migrate"], "date": "2026-12-02T22:13:38Z"}]}})
    assert "The cases migrate are from the run of 2026-12-02T22:13:38Z." in twice
