
if (!window.kouboReconnect) {
  window.kouboReconnect = true;
  let lost = false;
  setInterval(async () => {
    try {
      const response = await fetch(new URL('api/health', document.baseURI), {cache: 'no-store'});
      if (response.ok && lost) window.location.reload();
      lost = !response.ok;
    } catch (error) {
      lost = true;
    }
  }, 3000);
}
