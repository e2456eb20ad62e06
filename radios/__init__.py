"""Radio backends behind the zigpy ControllerApplication interface: sim, ezsp, znp."""
