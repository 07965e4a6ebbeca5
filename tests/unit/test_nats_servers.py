from shared.bus import servers


def test_one_url_is_one_server() -> None:
    assert servers("nats://127.0.0.1:4250") == ["nats://127.0.0.1:4250"]


def test_a_cluster_is_named_comma_separated() -> None:
    assert servers("nats://a:4222, nats://b:4222,nats://c:4222,") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
