"""The MQTT bridge's library: options, Home Assistant discovery, import rules, the outbox and the link.

The ``mqtt`` executive (:mod:`raspy.executives.mqtt`) wires these to the
key/value map and the broker; nothing here loads the house.
"""
