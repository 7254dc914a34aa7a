"""Emulated stand-ins for devices: processes that boot firmware and expose its serial link."""
