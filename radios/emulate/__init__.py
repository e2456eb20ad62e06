"""Emulated coordinators (EZSP NCP, Z-Stack ZNP) that put the simulated HAN behind real drivers."""
