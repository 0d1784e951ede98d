"""Board support: the only code that touches hardware (`machine`). esp32.py is the reference
board; sim.py is the host board used by the simulator and the tests."""
