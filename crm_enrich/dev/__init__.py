"""The local stack the demo and the tests start (devstack) and the demo."""
