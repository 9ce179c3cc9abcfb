
if (!window.kouboSizeGuard) {
  window.kouboSizeGuard = true;
  const refuse = (files, event) => {
    const big = Array.from(files || []).find((file) => file.size > props.max_bytes);
    if (!big) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.target instanceof HTMLInputElement) event.target.value = '';
    trigger('file_too_large', {name: big.name, size: big.size});
  };
  document.addEventListener('change', (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === 'file') refuse(input.files, event);
  }, true);
  document.addEventListener('drop', (event) => refuse(event.dataTransfer && event.dataTransfer.files, event), true);
}
