"""The OpenAI-compatible API end to end: real gateway, real emulators, the stock openai client."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators.text import expected_text, render_chat
from tests.conftest import (
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about the sea"}]


def client(url: str, key: str = GLOBAL_KEY, **kwargs: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, **kwargs)  # type: ignore[arg-type]


async def one_backend(emulators: EmulatorFactory, gateways: GatewayFactory, **emu: object):  # type: ignore[no-untyped-def]
    em = await emulators(**emu)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    return em, gw


async def test_openai_client_streams_chat_with_usage(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with client(gw.http_url) as c:
        stream = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, models = "", None, None, set()
        async for chunk in stream:
            models.add(chunk.model)
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
    expected = expected_text(render_chat([("user", str(MESSAGES[0]["content"]))], False), 12)
    assert text == expected
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 12
    assert models == {MODEL}  # the logical name, not the backend's served name
    assert em.stats.last_request is not None
    assert em.stats.last_request["model"] != MODEL  # the backend got its served name


async def test_openai_client_non_stream_chat_and_completions(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with client(gw.http_url) as c:
        chat = await c.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5,
        )
        completion = await c.completions.create(model=MODEL, prompt="Once upon", max_tokens=7)
        streamed = await c.completions.create(
            model=MODEL, prompt="Once upon", max_tokens=7, stream=True
        )
        streamed_text = "".join([ch.choices[0].text async for ch in streamed if ch.choices])
    parsed = chat.parse()
    assert parsed.choices[0].message.content == expected_text(
        render_chat([("user", str(MESSAGES[0]["content"]))], False), 5
    )
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5
    assert chat.headers["x-meridian-backend"] == "fra"
    assert chat.headers["x-meridian-region"] == "onprem:fra1"
    assert chat.headers["x-meridian-version"] == "v1"
    assert chat.headers["x-meridian-attempts"] == "1"
    assert len(chat.headers["x-request-id"]) == 32
    assert completion.choices[0].text == expected_text("Once upon", 7)
    assert streamed_text == completion.choices[0].text


async def test_models_list(emulators: EmulatorFactory, gateways: GatewayFactory) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with client(gw.http_url) as c:
        models = await c.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_eu_key_is_only_ever_served_in_the_eu(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    us, ie, fra = await emulators(), await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("us", "aws:us-east-1", "v1", us.url),
                ("ie", "aws:eu-west-1", "v1", ie.url),
                ("fra", "onprem:fra1", "v1", fra.url),
            ]
        )
    )
    regions = set()
    async with client(gw.http_url, EU_KEY) as c:
        for i in range(30):
            raw = await c.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=2,
                user=f"user-{i}",
            )
            regions.add(raw.headers["x-meridian-region"])
    assert regions == {"aws:eu-west-1", "onprem:fra1"}
    assert us.stats.requests == 0
    # narrowing to a jurisdiction outside the tenant's policy leaves nothing: 403, not US
    async with client(gw.http_url, EU_KEY, default_headers={"x-meridian-residency": "US"}) as c:
        with pytest.raises(openai.PermissionDeniedError, match="residency"):
            await c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert us.stats.requests == 0


async def test_killed_backend_fails_over_without_client_error(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    first, second = await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [("ie", "aws:eu-west-1", "v1", first.url), ("fra", "onprem:fra1", "v1", second.url)]
        )
    )
    await first.stop()
    served = set()
    async with client(gw.http_url, EU_KEY) as c:
        for i in range(12):
            raw = await c.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=3,
                stream=True,
                user=str(i),
            )
            stream = raw.parse()
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            assert text
            served.add((raw.headers["x-meridian-backend"], raw.headers["x-meridian-attempts"]))
    assert {b for b, _ in served} == {"fra"}
    assert ("fra", "2") in served  # some requests tried the dead one first and moved on


@pytest.mark.parametrize(
    ("fault", "status", "attempts"),
    [
        ({"status": 500}, 503, "2"),  # a second round after a backoff
        ({"status": 429, "retry_after": 7}, 503, "1"),  # longer than a client should wait
        ({"stall_after_tokens": 0}, 503, "2"),
    ],
)
async def test_failure_everywhere_before_first_token_is_a_real_error_status(  # type: ignore[no-untyped-def]
    emulators, gateways, fault, status, attempts
) -> None:
    em = await emulators()
    em.faults.update(fault)
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], timeouts={"first_token_s": 0.3})
    )
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.http_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == status
        assert resp.headers["x-meridian-attempts"] == attempts
        assert "Retry-After" in resp.headers
        if fault.get("retry_after"):
            assert resp.headers["Retry-After"] == "7"
    assert body["error"]["code"] == "upstream_unavailable"


async def test_client_error_from_the_model_is_400_not_retried(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    a, b = await emulators(), await emulators()
    a.faults.update({"status": 400})
    b.faults.update({"status": 400})
    gw = await gateways(
        gateway_config([("ie", "aws:eu-west-1", "v1", a.url), ("fra", "onprem:fra1", "v1", b.url)])
    )
    async with client(gw.http_url) as c:
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert a.stats.requests + b.stats.requests == 1


async def test_failure_after_first_token_ends_with_error_event_not_done(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    em.faults.update({"reset_after_tokens": 3})
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.http_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 10},
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
    events = [e for e in raw.decode().split("\n\n") if e]
    assert '"error"' in events[-1]
    assert "[DONE]" not in raw.decode()
    # and the stock client raises instead of returning a silently short answer
    em.faults.update({"reset_after_tokens": 3})
    async with client(gw.http_url) as c:
        stream = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            max_tokens=10,
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_client_disconnect_cancels_the_upstream(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    from tests.conftest import wait_for

    em = await emulators(itl_s=0.05)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        resp = await s.post(
            gw.http_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 500},
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        )
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        resp.close()  # drop the connection mid-stream
    await wait_for(lambda: em.stats.disconnects == 1)
    assert gw.runtime is not None
    await wait_for(lambda: runtime_of(gw).lifecycle.in_flight == 0)


async def test_stall_before_first_token_while_client_leaves(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    from tests.conftest import wait_for

    em = await emulators()
    em.faults.update({"stall_after_tokens": 0})
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        task = asyncio.create_task(
            s.post(
                gw.http_url + "/v1/chat/completions",
                json={"model": MODEL, "messages": MESSAGES, "stream": True},
                headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
            )
        )
        await wait_for(lambda: em.stats.running == 1)
        task.cancel()
    await wait_for(lambda: em.stats.disconnects == 1)
    await wait_for(lambda: runtime_of(gw).lifecycle.in_flight == 0)
