"""tests/lab/up.sh run again on a running lab keeps every host. It acts on every lab host (whole_lab): under
pytest -n it waits for the other worker's test in progress and holds that worker off while it runs, so it is a
module of its own that the plan (conftest.MODULE_ORDER) puts last, where a worker waits at the end anyway."""

import pytest

from conftest import LAB, LAB_INVENTORY, inventory_hosts, run


@pytest.mark.whole_lab
def test_lab_up_again_keeps_running_hosts(lab):
    started = {h: run(["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", h]).stdout for h in lab}
    everyone = inventory_hosts(LAB_INVENTORY)  # the whole lab, with the other worker's hosts under pytest -n
    env = {
        "LAB_BOOKWORM": str(sum(1 for h in everyone if h.endswith("-bookworm"))),
        "LAB_HOSTS": str(sum(1 for h in everyone if not h.endswith("-bookworm"))),
    }
    out = run([str(LAB / "up.sh")], env=env)
    assert "is up to date" in out.stderr
    assert "debootstrap" not in out.stderr
    assert started == {h: run(["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", h]).stdout for h in lab}
