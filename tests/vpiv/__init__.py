"""A virtual YubiKey PIV card for the tests: the applet (card.py) and the vpcd link that plugs it
into a real pcscd (vpcd.py), so ykcs11 and OpenSC talk to it exactly as to a USB key."""
