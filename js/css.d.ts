// esbuild bundles .css files as text (--loader:.css=text): the import is the stylesheet source.
declare module "*.css" {
  const text: string;
  export default text;
}
