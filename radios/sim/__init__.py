"""The simulated HAN: a zigpy ControllerApplication and simulated PPMID/HCALCS devices."""
