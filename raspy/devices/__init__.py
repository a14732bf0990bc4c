"""RasPy's device model: BaseDevice, DeviceRegister, sensors and media devices."""
from raspy.devices.base import BaseDevice, DeviceError, Reading, lookup
from raspy.devices.media import MediaCamera, MediaControl, MediaDevice, MediaTV
from raspy.devices.register import DeviceRegister
from raspy.devices.sensor import SensorDevice, SensorTemperature, SensorWind

#: The classes a standard register knows (MediaControl is only ever a TV's part).
STANDARD_CLASSES = (SensorDevice, SensorTemperature, SensorWind, MediaDevice, MediaCamera, MediaTV)


def standard_register() -> DeviceRegister:
    """A new register with the standard device classes."""
    return DeviceRegister(STANDARD_CLASSES)


__all__ = [
    "BaseDevice", "DeviceError", "DeviceRegister", "MediaCamera", "MediaControl", "MediaDevice", "MediaTV",
    "Reading", "STANDARD_CLASSES", "SensorDevice", "SensorTemperature", "SensorWind", "lookup", "standard_register",
]
