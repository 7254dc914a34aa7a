from harness.run import EMULATED_NODES_PER_CORE, device_slots


def test_real_devices_each_serve_their_own_node():
    assert device_slots(0, 16, cores=2) == 16


def test_emulators_are_limited_by_the_cores():
    assert device_slots(16, 0, cores=2) == 2 * EMULATED_NODES_PER_CORE
    assert device_slots(4, 0, cores=2) == 4
    assert device_slots(3, 2, cores=1) == 2 + EMULATED_NODES_PER_CORE


def test_an_override_wins_but_stays_within_the_nodes():
    assert device_slots(16, 0, cores=2, override=1) == 1
    assert device_slots(4, 0, cores=64, override=9) == 4
    assert device_slots(0, 3, cores=2, override=0) == 1
