"""The web console in a real headless browser (Debian's chromium through Selenium and
chromium-driver): it loads, logs in, lists a queue with its depth, and a purge clicked on
the page empties the queue.  Ours only: RabbitMQ's UI is another page."""
from __future__ import annotations

import shutil
import uuid

import pika
import pytest

from conftest import start_amqpbroker, stop

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium here"),
              pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ours():
    proc, port = start_amqpbroker()
    yield port, f"http://127.0.0.1:{proc.management_port}/"
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                              options=opts)
    yield driver
    driver.quit()


def test_the_console_lists_a_queue_and_purges_it(ours, browser):
    amqp_port, url = ours
    name = f"console-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    ch.queue_declare(name)
    for _ in range(3):
        ch.basic_publish("", name, b"m")
    wait = WebDriverWait(browser, 20)
    browser.get(url + "#queues")
    wait.until(EC.visibility_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "user").send_keys("guest")
    browser.find_element(By.ID, "password").send_keys("guest")
    browser.find_element(By.ID, "login-button").click()
    row = f'tr[data-queue="{name}"]'
    wait.until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'{row} td[data-field="messages_ready"]'), "3"))
    browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="purge"]').click()
    wait.until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'{row} td[data-field="messages_ready"]'), "0"))
    assert ch.queue_declare(name, passive=True).method.message_count == 0
    browser.get(url + "#overview")
    wait.until(EC.text_to_be_present_in_element((By.ID, "overview-body"), "Queues"))
    assert "amqpbroker" in browser.find_element(By.ID, "overview-body").text
    ch.queue_delete(name)
    conn.close()


def test_a_wrong_password_is_refused_on_the_page(ours, browser):
    browser.execute_script("sessionStorage.clear()")
    browser.get(ours[1])
    wait = WebDriverWait(browser, 20)
    browser.refresh()
    wait.until(EC.visibility_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "user").send_keys("guest")
    browser.find_element(By.ID, "password").send_keys("wrong")
    browser.find_element(By.ID, "login-button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "login-error"), "Login failed"))
