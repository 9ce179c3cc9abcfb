
(...values) => {
  const clicks = window.kouboClicks || (window.kouboClicks = {});
  const button = '%s';
  const now = Date.now();
  if (!clicks[button] || now - clicks[button].at > 3000) {
    // crypto.randomUUID needs a secure context; the page is often served over plain http on a LAN.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    clicks[button] = {at: now, token: Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')};
  }
  values[0] = clicks[button].token;
  return values;
}
