
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch (error) { /* fall through */ }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  return copied;
}
element.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button || !element.contains(button)) return;
  const action = button.dataset.action;
  if (action === 'copy') {
    const url = new URL(button.dataset.href, document.baseURI).href;
    if (await copyText(url)) {
      const label = button.textContent;
      button.textContent = button.dataset.copied;
      setTimeout(() => { button.textContent = label; }, 1500);
    } else {
      window.prompt(button.textContent, url);
    }
    return;
  }
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  // The preview it opens may land far below (after a long table): bring it into view when it comes.
  if (action === 'preview') window.kouboRevealPreview = true;
  trigger('job_action', {action: action, job: button.dataset.job});
});
if (element.closest('.koubo-preview')) {
  new MutationObserver(() => {
    const preview = element.querySelector('[data-testid=preview], [data-testid=job-result]');
    if (!window.kouboRevealPreview || !preview) return;
    window.kouboRevealPreview = false;
    preview.scrollIntoView({block: 'start', behavior: 'instant'});
  }).observe(element, {childList: true, subtree: true});
}
