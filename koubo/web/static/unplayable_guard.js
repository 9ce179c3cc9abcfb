
if (!window.kouboUnplayableGuard) {
  window.kouboUnplayableGuard = true;
  document.addEventListener('error', (event) => {
    const media = event.target;
    if (media instanceof HTMLMediaElement && media.closest('.koubo-upload')) event.stopImmediatePropagation();
  }, true);
}
