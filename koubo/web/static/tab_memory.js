
if (!window.kouboTabMemory) {
  window.kouboTabMemory = true;
  document.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('#koubo-tabs button') : null;
    const tab = button && (button.dataset.tabId || props.tab_ids[button.textContent.trim()]);
    if (tab) localStorage.setItem('koubo-tab', tab);
  }, true);
}
