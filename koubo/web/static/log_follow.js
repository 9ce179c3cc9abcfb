
new MutationObserver(() => {
  const log = element.querySelector('.koubo-log');
  if (log) log.scrollTop = log.scrollHeight;
}).observe(element, {childList: true, subtree: true});
