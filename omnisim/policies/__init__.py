"""The decision core: pure policies shared by the simulator and the sender."""
