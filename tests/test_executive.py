"""What an executive counts on its board slot for each request it serves."""
from raspy.house.executive import Server, Settings
from raspy.mdp import protocol as p
from raspy.mdp.service import Service, not_found


class Lookup(Service):
    def do_get(self, args):
        raise not_found(f"no {args!r}")

    def do_boom(self, args):
        raise RuntimeError("sensor on fire")

    def do_echo(self, args):
        return args


def test_requests_bytes_and_server_errors_are_counted_but_not_the_callers_mistakes(tmp_path):
    server = Server(Settings("fake", "pi", state_dir=tmp_path))
    handler = server.add_service("devices", Lookup()).handler
    requests = [p.request("echo", "x"), p.request("get", "x"), p.request("boom"), p.request("nope")]
    statuses = [p.parse_reply(handler(r))[0] for r in requests]
    assert statuses == [200, 404, 500, 501]
    state = server.slot.read()
    assert (state.requests, state.replies, state.errors) == (4, 4, 2)  # 500 and 501; a 404 is an answer
    assert state.bytes_in == sum(len(frame) for r in requests for frame in r)
    assert state.bytes_out > 0
